//! nftables over netlink: the `inet multimesh` table is programmed and
//! removed by multimesh itself, as one nf_tables batch (one transaction)
//! sent on a NETLINK_NETFILTER socket opened inside the pod netns — no
//! `nft` process. The expressions are the ones `nft` generates for the text
//! `nft::render_table` prints (see `nft --debug=netlink`), so `nft list`
//! shows exactly that text and CHECK keeps comparing text.
//!
//! The messages are `netlink-packet-netfilter`'s typed table, chain and
//! rule messages (its `redir` expression is missing: it is built as a raw
//! expression); dump replies are parsed by the same crate. The socket is
//! `netlink-sys`'s.
//!
//! Why no `nft`: an `nft` exec costs ~4 ms of CPU per ADD and per DEL, and
//! a process that closes an nf_tables socket while a deleted table awaits
//! its RCU grace period waits for it holding the netns's nf_tables commit
//! mutex — the mutex a veth being unregistered in that netns (the
//! delegate's DEL) needs. Keeping the socket open until multimesh exits
//! (after the delegates) lets the kernel finish in the background.

use super::plan::{Chain, Family, Match, Plan, Rule, Target};
use super::Cidr;
use crate::error::{code, CniError, Result};
use crate::netlink;
use crate::netns::NetNs;
use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLA_F_NESTED, NLM_F_ACK,
    NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, HookNumber, Immediate, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage,
    Operator, Payload, Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage, Verdict,
    VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::sync::Mutex;

// What the crate leaves to its users (linux/netfilter/nfnetlink.h,
// linux/netfilter/nf_tables.h, linux/netfilter/nf_nat.h).
/// The subsystem a batch is for, in the batch messages' nfgenmsg res_id.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
const NFTA_REDIR_FLAGS: u16 = 3;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NF_ACCEPT: u32 = 1;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// `priority dstnat` (NF_IP_PRI_NAT_DST), the base chains' priority.
const PRIORITY_DSTNAT: i32 = -100;
const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
const IFNAMSIZ: usize = libc::IFNAMSIZ;
/// The table iptables-nft keeps its nat chains in (`ip nat`, `ip6 nat`).
const XT_TABLE: &str = "nat";

/// Sockets whose close is left to process exit (see the module doc).
static LINGER: Mutex<Vec<Socket>> = Mutex::new(Vec::new());

/// One nf_tables batch: BATCH_BEGIN, the messages, BATCH_END, emitted into
/// one buffer, numbered from 0.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// What each acknowledged message does, by sequence number - 1.
    what: Vec<String>,
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::with_capacity(8192),
            seq: 0,
            what: Vec::new(),
        };
        b.control(ControlMessage::BatchBegin);
        b
    }

    /// BATCH_BEGIN or BATCH_END: no family, the subsystem in res_id.
    fn control(&mut self, m: ControlMessage) {
        let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
        self.emit(header, m.into(), NLM_F_REQUEST);
    }

    /// An nf_tables message on `family`, acknowledged.
    fn msg(&mut self, family: NetfilterProtoFamily, m: NfTablesMessage, flags: u16, what: String) {
        self.what.push(what);
        let header = NetfilterHeader::new(family, 0, 0);
        self.emit(header, m.into(), NLM_F_REQUEST | NLM_F_ACK | flags);
    }

    fn emit(&mut self, header: NetfilterHeader, inner: NetfilterMessageInner, flags: u16) {
        let msg = request(header, inner, flags, self.seq);
        self.seq += 1;
        let at = self.buf.len();
        self.buf.resize(at + msg.buffer_len(), 0);
        msg.serialize(&mut self.buf[at..]);
    }

    fn finish(mut self) -> (Vec<u8>, Vec<String>) {
        self.control(ControlMessage::BatchEnd);
        (self.buf, self.what)
    }
}

/// One request, its length and type set; port id 0 (the kernel's).
fn request(
    header: NetfilterHeader,
    inner: NetfilterMessageInner,
    flags: u16,
    seq: u32,
) -> NetlinkMessage<NetfilterMessage> {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h.sequence_number = seq;
    let payload = NetlinkPayload::InnerMessage(NetfilterMessage::new(header, inner));
    let mut msg = NetlinkMessage::new(h, payload);
    msg.finalize();
    msg
}

fn chain_name(c: Chain) -> &'static str {
    super::nft::chain_name(c)
}

fn nfproto(f: Family) -> NetfilterProtoFamily {
    match f {
        Family::V4 => NetfilterProtoFamily::IPv4,
        Family::V6 => NetfilterProtoFamily::IPv6,
    }
}

// ------------------------------------------------------------ expressions

/// A rule's expressions, in order.
type Exprs = Vec<ListAttribute<ExpressionAttribute>>;

fn reg(r: Register) -> [u8; 4] {
    u32::from(r).to_be_bytes()
}

fn meta(e: &mut Exprs, key: MetaKey) {
    e.push(
        Expressions::Meta(vec![
            Meta::DestinationRegister(Register::Reg1),
            Meta::Key(key),
        ])
        .into(),
    );
}

fn cmp(e: &mut Exprs, op: Operator, data: Vec<u8>) {
    e.push(
        Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(op),
            Cmp::Data(DataAttribute::Value(data)),
        ])
        .into(),
    );
}

fn payload(e: &mut Exprs, base: u32, offset: u32, len: u32) {
    e.push(
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(base),
            Payload::Offset(offset),
            Payload::Len(len),
        ])
        .into(),
    );
}

fn verdict(e: &mut Exprs, code: Verdict, chain: Option<&str>) {
    let mut v = vec![VerdictAttribute::Code(code)];
    if let Some(c) = chain {
        v.push(VerdictAttribute::Chain(c.into()));
    }
    e.push(
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Verdict),
            Immediate::Data(DataAttribute::Verdict(v)),
        ])
        .into(),
    );
}

/// `redirect to :port`: the port into register 1, then `redir` (not in
/// the crate: a raw expression of its two attributes).
fn redirect(e: &mut Exprs, port: u16) {
    e.push(
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Reg1),
            Immediate::Data(DataAttribute::Value(port.to_be_bytes().to_vec())),
        ])
        .into(),
    );
    e.push(
        Expressions::Other {
            expression_type: "redir".into(),
            attributes: vec![
                DefaultNla::new(NFTA_REDIR_REG_PROTO_MIN, reg(Register::Reg1).to_vec()),
                DefaultNla::new(
                    NFTA_REDIR_FLAGS,
                    NF_NAT_RANGE_PROTO_SPECIFIED.to_be_bytes().to_vec(),
                ),
            ],
        }
        .into(),
    );
}

/// A rule's NFTA_RULE_EXPRESSIONS, each expression emitted once by the
/// crate and the list carried pre-encoded. Emitted as one typed tree, the
/// crate's `Emitable` would recompute every nested length at each level
/// above it (`&[T]::buffer_len` twice per element): exponential in the
/// depth, ~7 times the encoding time of the batch (`examples/
/// nft_encode_cost.rs`). The bytes are the same.
fn expressions(e: &Exprs) -> RuleAttribute {
    let mut buf = vec![0u8; e.as_slice().buffer_len()];
    let mut at = 0;
    for x in e {
        let len = x.buffer_len();
        x.emit(&mut buf[at..at + len]);
        at += len;
    }
    RuleAttribute::Other(DefaultNla::new(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, buf))
}

fn l4proto_tcp(e: &mut Exprs) {
    meta(e, MetaKey::L4Proto);
    cmp(e, Operator::Equal, vec![IPPROTO_TCP]);
}

/// `iifname|oifname NAME`: the name zero-padded to IFNAMSIZ, as nft does.
fn ifname(e: &mut Exprs, key: MetaKey, name: &str) {
    meta(e, key);
    let mut v = vec![0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    v[..n].copy_from_slice(&name.as_bytes()[..n]);
    cmp(e, Operator::Equal, v);
}

/// `ip|ip6 saddr|daddr [!=] CIDR`, with the `meta nfproto` dependency nft
/// adds in an inet table (once per rule and family).
fn address(e: &mut Exprs, c: &Cidr, dst: bool, op: Operator, proto: &mut Option<Family>) {
    let fam = c.family();
    if *proto != Some(fam) {
        meta(e, MetaKey::Nfproto);
        cmp(e, Operator::Equal, vec![u8::from(nfproto(fam))]);
        *proto = Some(fam);
    }
    let (bytes, off): (Vec<u8>, u32) = match c.addr {
        std::net::IpAddr::V4(a) => (a.octets().to_vec(), if dst { 16 } else { 12 }),
        std::net::IpAddr::V6(a) => (a.octets().to_vec(), if dst { 24 } else { 8 }),
    };
    let len = bytes.len() as u32;
    payload(e, NFT_PAYLOAD_NETWORK_HEADER, off, len);
    let bits = usize::from(c.len).min(bytes.len() * 8);
    if bits == bytes.len() * 8 {
        cmp(e, op, bytes);
        return;
    }
    let mask: Vec<u8> = (0..bytes.len())
        .map(|i| match bits.saturating_sub(i * 8).min(8) {
            0 => 0,
            have => 0xffu8 << (8 - have),
        })
        .collect();
    let net: Vec<u8> = bytes.iter().zip(&mask).map(|(a, m)| a & m).collect();
    let xor = vec![0u8; mask.len()];
    e.push(
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(len),
            Bitwise::Mask(DataAttribute::Value(mask)),
            Bitwise::Xor(DataAttribute::Value(xor)),
        ])
        .into(),
    );
    cmp(e, op, net);
}

/// The expressions of one rule, in the order `nft::rule_text` writes its
/// parts (so nft would build the same rule from that text).
fn rule_exprs(r: &Rule) -> Exprs {
    let mut e = Exprs::new();
    let mut proto: Option<Family> = None;
    for m in &r.matches {
        if let Match::Src(c) = m {
            address(&mut e, c, false, Operator::Equal, &mut proto);
        }
    }
    for m in &r.matches {
        match m {
            Match::Dst(c) => address(&mut e, c, true, Operator::Equal, &mut proto),
            Match::NotDst(c) => address(&mut e, c, true, Operator::NotEqual, &mut proto),
            _ => {}
        }
    }
    for m in &r.matches {
        if let Match::InIface(i) = m {
            ifname(&mut e, MetaKey::Iifname, i);
        }
    }
    for m in &r.matches {
        if let Match::OutIface(i) = m {
            ifname(&mut e, MetaKey::Oifname, i);
        }
    }
    let has_dport = r.matches.iter().any(|m| matches!(m, Match::Dport(_)));
    let tcp = r.matches.iter().any(|m| matches!(m, Match::Tcp))
        || matches!(r.target, Target::Redirect(_));
    let mut l4 = false;
    if tcp && !has_dport {
        l4proto_tcp(&mut e);
        l4 = true;
    }
    for m in &r.matches {
        let (key, op, id) = match m {
            Match::Uid(u) => (MetaKey::SocketUserId, Operator::Equal, *u),
            Match::NotUid(u) => (MetaKey::SocketUserId, Operator::NotEqual, *u),
            Match::Gid(g) => (MetaKey::SocketGroupId, Operator::Equal, *g),
            Match::NotGid(g) => (MetaKey::SocketGroupId, Operator::NotEqual, *g),
            _ => continue,
        };
        meta(&mut e, key);
        cmp(&mut e, op, id.to_ne_bytes().to_vec());
    }
    for m in &r.matches {
        if let Match::Dport(p) = m {
            if !l4 {
                l4proto_tcp(&mut e);
                l4 = true;
            }
            payload(&mut e, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            cmp(&mut e, Operator::Equal, p.to_be_bytes().to_vec());
        }
    }
    match r.target {
        Target::Jump(c) => verdict(&mut e, Verdict::Jump, Some(chain_name(c))),
        Target::Return => verdict(&mut e, Verdict::Return, None),
        Target::Redirect(p) => redirect(&mut e, p),
    }
    e
}

// --------------------------------------------------------------- batches

fn table_msg(b: &mut Batch, delete: bool) {
    let table = super::nft::TABLE;
    let attributes = vec![TableAttribute::Name(table.into())];
    let (m, flags, what) = if delete {
        (
            NfTablesMessage::DeleteTable(TableMessage { attributes }),
            0,
            "delete",
        )
    } else {
        (
            NfTablesMessage::NewTable(TableMessage { attributes }),
            NLM_F_CREATE,
            "add",
        )
    };
    b.msg(
        NetfilterProtoFamily::Inet,
        m,
        flags,
        format!("{what} table inet {table}"),
    );
}

/// The batch `nft::render_apply` describes: create the table if needed,
/// flush its rules, (re)declare the chains, append the rules.
pub fn apply_batch(plan: &Plan) -> (Vec<u8>, Vec<String>) {
    let table = super::nft::TABLE;
    let inet = NetfilterProtoFamily::Inet;
    let mut b = Batch::new();
    table_msg(&mut b, false);
    b.msg(
        inet,
        NfTablesMessage::DeleteRule(RuleMessage {
            attributes: vec![RuleAttribute::Table(table.into())],
        }),
        0,
        format!("flush table inet {table}"),
    );
    for c in super::nft::CHAINS {
        let mut attributes = vec![
            ChainAttribute::Table(table.into()),
            ChainAttribute::Name(chain_name(c).into()),
        ];
        let hook = match c {
            Chain::Prerouting => Some(InetHookNumber::PreRouting),
            Chain::Output => Some(InetHookNumber::LocalOut),
            _ => None,
        };
        if let Some(h) = hook {
            attributes.extend([
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(h)),
                    Hook::Priority(PRIORITY_DSTNAT as u32),
                ]),
                ChainAttribute::Policy(NF_ACCEPT),
                ChainAttribute::Type("nat".into()),
            ]);
        }
        b.msg(
            inet,
            NfTablesMessage::NewChain(ChainMessage { attributes }),
            NLM_F_CREATE,
            format!("add chain {}", chain_name(c)),
        );
    }
    let rules = super::nft::merged_rules(plan);
    let mut add_rule = |c: Chain, text: String, exprs: Exprs| {
        b.msg(
            inet,
            NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table(table.into()),
                    RuleAttribute::Chain(chain_name(c).into()),
                    expressions(&exprs),
                ],
            }),
            NLM_F_CREATE | NLM_F_APPEND,
            format!("add rule {}: {text}", chain_name(c)),
        )
    };
    for c in super::nft::CHAINS {
        if matches!(c, Chain::Prerouting | Chain::Output) && !plan.ipv6 {
            // The table is single-stack.
            let mut e = Exprs::new();
            meta(&mut e, MetaKey::Nfproto);
            cmp(
                &mut e,
                Operator::Equal,
                vec![u8::from(NetfilterProtoFamily::IPv6)],
            );
            verdict(&mut e, Verdict::Return, None);
            add_rule(c, "meta nfproto ipv6 return".into(), e);
        }
        for r in rules.iter().filter(|r| r.chain == c) {
            add_rule(c, super::nft::rule_text(r), rule_exprs(r));
        }
    }
    b.finish()
}

/// Delete the table, also when it is not there (it is created first in
/// the same transaction).
pub fn remove_batch() -> (Vec<u8>, Vec<String>) {
    let mut b = Batch::new();
    table_msg(&mut b, false);
    table_msg(&mut b, true);
    b.finish()
}

/// The batch that removes multimesh's iptables-nft chains from `family`'s
/// nat table: the jumps to them (chain, rule handle), then the chains,
/// flushed and deleted.
fn xt_batch(family: Family, chains: &[String], jumps: &[(String, u64)]) -> (Vec<u8>, Vec<String>) {
    let family = nfproto(family);
    let table = || XT_TABLE.to_string();
    let mut b = Batch::new();
    for (c, h) in jumps {
        let attributes = vec![
            RuleAttribute::Table(table()),
            RuleAttribute::Chain(c.clone()),
            RuleAttribute::Handle(*h),
        ];
        let m = NfTablesMessage::DeleteRule(RuleMessage { attributes });
        b.msg(family, m, 0, format!("delete a jump from {c}"));
    }
    for c in chains {
        let attributes = vec![
            RuleAttribute::Table(table()),
            RuleAttribute::Chain(c.clone()),
        ];
        let m = NfTablesMessage::DeleteRule(RuleMessage { attributes });
        b.msg(family, m, 0, format!("flush chain {c}"));
    }
    for c in chains {
        let attributes = vec![
            ChainAttribute::Table(table()),
            ChainAttribute::Name(c.clone()),
        ];
        let m = NfTablesMessage::DeleteChain(ChainMessage { attributes });
        b.msg(family, m, 0, format!("delete chain {c}"));
    }
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
        let sock = Socket::new(NETLINK_NETFILTER)?;
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

/// The messages of one datagram of replies, parsed.
fn replies(data: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>> {
    let mut out = Vec::new();
    let mut data = data;
    while !data.is_empty() {
        let part =
            netlink::parse::<NetfilterMessage>(data).map_err(|e| err(format!("nftables: {e}")))?;
        out.push(part.msg);
        data = part.rest;
    }
    Ok(out)
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
        let n = recv(sock, &mut rbuf)?;
        for reply in replies(&rbuf[..n])? {
            let NetlinkPayload::Error(e) = reply.payload else {
                continue;
            };
            match e.code {
                None => acked += 1,
                Some(code) if failure.is_none() => {
                    let step = (reply.header.sequence_number as usize)
                        .checked_sub(1)
                        .and_then(|i| what.get(i))
                        .map_or("the batch", String::as_str);
                    failure = Some(format!(
                        "nftables: {step}: {}",
                        std::io::Error::from_raw_os_error(-code.get())
                    ));
                }
                Some(_) => {}
            }
        }
    }
    match failure {
        Some(f) => Err(err(f)),
        None => Ok(()),
    }
}

// ------------------------------------------- iptables-nft, over netlink

/// The dump request for `m` (chains, or rules) of `family`.
fn dump_request(family: Family, m: NfTablesMessage) -> Vec<u8> {
    let header = NetfilterHeader::new(nfproto(family), 0, 0);
    let msg = request(header, m.into(), NLM_F_REQUEST | NLM_F_DUMP, 1);
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Dump `m` (chains, or rules) of `family`: the nf_tables messages of the
/// replies. No such table is an empty answer.
fn dump(sock: &Socket, family: Family, m: NfTablesMessage) -> Result<Vec<NfTablesMessage>> {
    send(sock, &dump_request(family, m))?;
    let mut out = Vec::new();
    let mut rbuf = vec![0u8; 65536];
    loop {
        let n = recv(sock, &mut rbuf)?;
        for reply in replies(&rbuf[..n])? {
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    let code = e.raw_code();
                    if code == -libc::ENOENT {
                        return Ok(out); // no such table: nothing of ours
                    }
                    return Err(err(format!(
                        "nftables: list: {}",
                        std::io::Error::from_raw_os_error(-code)
                    )));
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(m),
                    ..
                }) => out.push(m),
                _ => {}
            }
        }
    }
}

/// The chain a rule jumps or goes to, if any.
fn rule_jump(rule: &RuleMessage) -> Option<&str> {
    let exprs = rule.attributes.iter().find_map(|a| match a {
        RuleAttribute::Expressions(e) => Some(e),
        _ => None,
    })?;
    let verdicts = exprs.iter().filter_map(|e| match e {
        ListAttribute::Element(attrs) => Some(attrs),
        _ => None,
    });
    let immediate = verdicts.flatten().filter_map(|a| match a {
        ExpressionAttribute::Data(Expressions::Immediate(i)) => Some(i),
        _ => None,
    });
    let data = immediate.flatten().filter_map(|i| match i {
        Immediate::Data(DataAttribute::Verdict(v)) => Some(v),
        _ => None,
    });
    data.filter(|v| {
        v.iter().any(|a| {
            matches!(
                a,
                VerdictAttribute::Code(Verdict::Jump) | VerdictAttribute::Code(Verdict::Goto)
            )
        })
    })
    .find_map(|v| {
        v.iter().find_map(|a| match a {
            VerdictAttribute::Chain(c) => Some(c.as_str()),
            _ => None,
        })
    })
}

/// The (table, name) of a chain message.
fn chain_of(c: &ChainMessage) -> (Option<&str>, Option<&str>) {
    let mut out = (None, None);
    for a in &c.attributes {
        match a {
            ChainAttribute::Table(t) => out.0 = Some(t.as_str()),
            ChainAttribute::Name(n) => out.1 = Some(n.as_str()),
            _ => {}
        }
    }
    out
}

/// The chain and handle of a rule message.
fn rule_place(r: &RuleMessage) -> (Option<&str>, Option<u64>) {
    let mut out = (None, None);
    for a in &r.attributes {
        match a {
            RuleAttribute::Chain(c) => out.0 = Some(c.as_str()),
            RuleAttribute::Handle(h) => out.1 = Some(*h),
            _ => {}
        }
    }
    out
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
    let r = families
        .iter()
        .try_for_each(|f| remove_xt_on(&sock, prefix, *f));
    linger(sock);
    r
}

fn remove_xt_on(sock: &Socket, prefix: &str, family: Family) -> Result<()> {
    let all_chains = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
    let chains: Vec<String> = dump(sock, family, all_chains)?
        .iter()
        .filter_map(|m| match m {
            NfTablesMessage::NewChain(c) => Some(chain_of(c)),
            _ => None,
        })
        .filter(|(table, _)| *table == Some(XT_TABLE))
        .filter_map(|(_, name)| name.filter(|n| n.starts_with(prefix)).map(String::from))
        .collect();
    let nat_rules = NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![RuleAttribute::Table(XT_TABLE.into())],
    });
    let mut jumps: Vec<(String, u64)> = Vec::new();
    for m in dump(sock, family, nat_rules)? {
        let NfTablesMessage::NewRule(r) = m else {
            continue;
        };
        let (Some(chain), Some(handle)) = rule_place(&r) else {
            continue;
        };
        if !chain.starts_with(prefix) && rule_jump(&r).is_some_and(|t| t.starts_with(prefix)) {
            jumps.push((chain.to_string(), handle));
        }
    }
    if chains.is_empty() && jumps.is_empty() {
        return Ok(());
    }
    send_batch(sock, xt_batch(family, &chains, &jumps))
}

pub fn apply(plan: &Plan, ns: &NetNs) -> Result<()> {
    transact(ns, apply_batch(plan))
}

pub fn remove(ns: &NetNs) -> Result<()> {
    transact(ns, remove_batch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::nftnl_old as old;
    use crate::capture::{CaptureConfig, PortSet, Profile};
    use netlink_packet_core::Parseable;

    /// SplitMix64: a deterministic generator for the plans compared below.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn ports(&mut self) -> Vec<u16> {
            (0..self.below(5)).map(|_| self.next() as u16).collect()
        }
        fn cidrs(&mut self) -> Vec<Cidr> {
            (0..self.below(4))
                .map(|_| {
                    let s = if self.chance(50) {
                        let a = std::net::Ipv4Addr::from(self.next() as u32);
                        format!("{a}/{}", self.below(33))
                    } else {
                        let a = std::net::Ipv6Addr::from(
                            (u128::from(self.next()) << 64) | u128::from(self.next()),
                        );
                        format!("{a}/{}", self.below(129))
                    };
                    s.parse().unwrap()
                })
                .collect()
        }
        fn ifnames(&mut self) -> Vec<String> {
            (0..self.below(3))
                .map(|_| {
                    let len = 1 + self.below(20) as usize; // > IFNAMSIZ - 1 too
                    (0..len)
                        .map(|_| char::from(b'a' + self.below(26) as u8))
                        .collect()
                })
                .collect()
        }
    }

    fn random_config(rng: &mut Rng) -> CaptureConfig {
        let profile = if rng.chance(50) {
            Profile::Istio
        } else {
            Profile::Linkerd
        };
        let mut c = CaptureConfig::defaults(profile);
        c.inbound_port = rng.next() as u16;
        c.outbound_port = rng.next() as u16;
        c.proxy_uid = rng.next() as u32;
        c.proxy_gid = rng.chance(50).then(|| rng.next() as u32);
        c.inbound = if rng.chance(50) {
            PortSet::AllExcept(rng.ports())
        } else {
            PortSet::Only(rng.ports())
        };
        c.exclude_outbound_ports = rng.ports();
        c.include_outbound_ports = rng.ports();
        c.include_outbound_cidrs = rng.chance(50).then(|| rng.cidrs());
        c.exclude_outbound_cidrs = rng.cidrs();
        c.exclude_interfaces = rng.ifnames();
        c
    }

    /// The named cases: each profile's defaults, then each option alone.
    fn named_configs() -> Vec<CaptureConfig> {
        let mut out = Vec::new();
        for profile in [Profile::Istio, Profile::Linkerd] {
            let d = CaptureConfig::defaults(profile);
            out.push(d.clone());
            let with = |f: &dyn Fn(&mut CaptureConfig)| {
                let mut c = d.clone();
                f(&mut c);
                c
            };
            let cidrs = |l: &[&str]| l.iter().map(|s| s.parse().unwrap()).collect::<Vec<Cidr>>();
            out.push(with(&|c| c.exclude_outbound_ports = vec![22, 3306]));
            out.push(with(&|c| c.include_outbound_ports = vec![80, 443]));
            out.push(with(&|c| {
                c.include_outbound_cidrs = Some(cidrs(&["198.51.100.0/24", "2001:db8::/32"]))
            }));
            out.push(with(&|c| {
                c.exclude_outbound_cidrs =
                    cidrs(&["203.0.113.7", "198.51.100.0/25", "2001:db8:1::/48", "::/0"])
            }));
            out.push(with(&|c| {
                c.exclude_interfaces = vec!["net1".into(), "eth1".into()]
            }));
            out.push(with(&|c| c.inbound = PortSet::Only(vec![8080, 9090])));
            out.push(with(&|c| c.inbound = PortSet::Only(vec![])));
            out.push(with(&|c| c.inbound = PortSet::AllExcept(vec![])));
            out.push(with(&|c| c.proxy_gid = None));
            out.push(with(&|c| c.proxy_gid = Some(4242)));
            out.push(with(&|c| c.proxy_uid = 0));
        }
        out
    }

    /// The batch's messages: (raw bytes, parsed).
    fn messages(buf: &[u8]) -> Vec<(&[u8], NetlinkMessage<NetfilterMessage>)> {
        let mut out = Vec::new();
        let mut d = buf;
        while !d.is_empty() {
            let part = netlink::parse::<NetfilterMessage>(d).unwrap();
            let len = part.msg.header.length as usize;
            assert!(len.is_multiple_of(4), "unaligned length {len}");
            out.push((&d[..len], part.msg));
            d = part.rest;
        }
        out
    }

    /// The crate-built batches are byte for byte the hand-encoded ones
    /// (sequence numbers and the per-message descriptions included), for
    /// every option of both profiles, single- and dual-stack; and the
    /// crate's parser reads the same jump targets from them as the
    /// hand-written one.
    #[test]
    fn batches_equal_the_hand_encoded_ones() {
        let mut rng = Rng(0x006e_6674_6e6c);
        let mut configs = named_configs();
        configs.extend((0..400).map(|_| random_config(&mut rng)));
        let mut rules = 0;
        for cfg in &configs {
            for ipv6 in [false, true] {
                let plan = Plan::new(cfg, ipv6);
                let new = apply_batch(&plan);
                assert_eq!(new, old::apply_batch(&plan), "{plan:?}");
                for (raw, m) in messages(&new.0) {
                    let NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(r)),
                        ..
                    }) = &m.payload
                    else {
                        continue;
                    };
                    assert_eq!(rule_jump(r), old::rule_jump(&raw[20..]).as_deref());
                    rules += 1;
                }
            }
        }
        assert!(rules > 10_000, "{rules} rules compared");
        assert_eq!(remove_batch(), old::remove_batch());
        for family in [Family::V4, Family::V6] {
            let fam = u8::from(nfproto(family));
            for n in 0..20 {
                let chains: Vec<String> = (0..n % 5).map(|i| format!("MULTIMESH_{i}")).collect();
                let jumps: Vec<(String, u64)> = (0..n % 3)
                    .map(|i| (format!("OUTPUT{i}"), rng.next()))
                    .collect();
                let old_jumps: Vec<(String, [u8; 8])> = jumps
                    .iter()
                    .map(|(c, h)| (c.clone(), h.to_be_bytes()))
                    .collect();
                assert_eq!(
                    xt_batch(family, &chains, &jumps),
                    old::xt_batch(fam, &chains, &old_jumps)
                );
            }
            let chains = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
            assert_eq!(
                dump_request(family, chains),
                old::dump_request(old::NFT_MSG_GETCHAIN, fam, None)
            );
            let rules = NfTablesMessage::GetRule(RuleMessage {
                attributes: vec![RuleAttribute::Table(XT_TABLE.into())],
            });
            assert_eq!(
                dump_request(family, rules),
                old::dump_request(old::NFT_MSG_GETRULE, fam, Some(XT_TABLE))
            );
        }
    }

    /// Rules as the kernel dumps them (hand-encoded), read by the crate's
    /// parser: chain, handle and jump target as the hand-written reader
    /// found them.
    #[test]
    fn dumped_rules_read_like_the_hand_parser() {
        let cases: Vec<Vec<u8>> = vec![
            old::rule_attrs("OUTPUT", 7, |b| {
                old::l4proto_tcp(b);
                old::verdict(b, old::NFT_JUMP, Some("MULTIMESH_OUTPUT"));
            }),
            old::rule_attrs("PREROUTING", 1 << 40, |b| {
                old::verdict(b, old::NFT_GOTO, Some("MULTIMESH_INBOUND"))
            }),
            old::rule_attrs("OUTPUT", 3, |b| old::verdict(b, old::NFT_RETURN, None)),
            old::rule_attrs("OUTPUT", 4, |b| {
                old::ifname(b, old::NFT_META_IIFNAME, "net1");
            }),
        ];
        for raw in cases {
            let r = RuleMessage::parse(&raw[..]).unwrap();
            assert_eq!(rule_jump(&r), old::rule_jump(&raw).as_deref());
            assert_eq!(rule_place(&r).0, Some(&*old::attr_str(&raw, 2).unwrap()));
        }
    }
}
