//! nftables over netlink: the `inet multimesh` table is programmed and
//! removed by multimesh itself, as one nf_tables batch (one transaction)
//! sent on a NETLINK_NETFILTER socket opened inside the pod netns — no
//! `nft` process. The expressions are the ones `nft` generates for the text
//! `nft::render_table` prints (see `nft --debug=netlink`), so `nft list`
//! shows exactly that text and CHECK keeps comparing text.
//!
//! The messages are `netlink-packet-netfilter`'s typed table, chain and
//! rule messages (its `redir`, `ct`, `socket` and `tproxy` expressions
//! are missing: they are built as raw expressions, `Expressions::Other`,
//! with the attributes `nft --debug=netlink` shows nft sending); dump
//! replies are parsed by the same crate. The socket is
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
const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
/// `priority mangle` and `priority raw` (NF_IP_PRI_MANGLE, NF_IP_PRI_RAW).
const PRIORITY_MANGLE: i32 = -150;
const PRIORITY_RAW: i32 = -300;
const NF_DROP: u32 = 0;
// The expressions the crate has no type for: ct, socket, tproxy
// (linux/netfilter/nf_tables.h).
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_SREG: u16 = 4;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_MARK: u32 = 3;
const NFT_CT_ZONE: u32 = 17;
/// NF_CT_STATE_INVALID_BIT, the `ct state invalid` bit.
const CT_STATE_INVALID: u32 = 1;
const NFTA_SOCKET_KEY: u16 = 1;
const NFTA_SOCKET_DREG: u16 = 2;
const NFT_SOCKET_TRANSPARENT: u32 = 0;
const NFTA_TPROXY_FAMILY: u16 = 1;
const NFTA_TPROXY_REG_PORT: u16 = 3;
const IFNAMSIZ: usize = libc::IFNAMSIZ;

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
/// depth: the batch would take about twice the CPU time to encode
/// (`examples/nft_encode_cost.rs`, docs/design.md). The bytes are the
/// same.
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

/// `meta l4proto tcp|udp`.
fn l4proto(e: &mut Exprs, udp: bool) {
    meta(e, MetaKey::L4Proto);
    cmp(
        e,
        Operator::Equal,
        vec![if udp { IPPROTO_UDP } else { IPPROTO_TCP }],
    );
}

/// `ct KEY`, loaded into register 1 (raw: the crate has no `ct`).
fn ct_load(e: &mut Exprs, key: u32) {
    e.push(
        Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                DefaultNla::new(NFTA_CT_DREG, reg(Register::Reg1).to_vec()),
                DefaultNla::new(NFTA_CT_KEY, key.to_be_bytes().to_vec()),
            ],
        }
        .into(),
    );
}

/// `ct KEY set` from register 1.
fn ct_set(e: &mut Exprs, key: u32) {
    e.push(
        Expressions::Other {
            expression_type: "ct".into(),
            attributes: vec![
                DefaultNla::new(NFTA_CT_KEY, key.to_be_bytes().to_vec()),
                DefaultNla::new(NFTA_CT_SREG, reg(Register::Reg1).to_vec()),
            ],
        }
        .into(),
    );
}

/// `meta KEY set` from register 1.
fn meta_set(e: &mut Exprs, key: MetaKey) {
    e.push(Expressions::Meta(vec![Meta::Key(key), Meta::SourceRegister(Register::Reg1)]).into());
}

/// A value into register 1.
fn load(e: &mut Exprs, data: Vec<u8>) {
    e.push(
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(Register::Reg1),
            Immediate::Data(DataAttribute::Value(data)),
        ])
        .into(),
    );
}

/// `ct state invalid`: the state bit masked, compared with zero.
fn ct_invalid(e: &mut Exprs) {
    ct_load(e, NFT_CT_STATE);
    e.push(
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(4),
            Bitwise::Mask(DataAttribute::Value(
                CT_STATE_INVALID.to_ne_bytes().to_vec(),
            )),
            Bitwise::Xor(DataAttribute::Value(vec![0; 4])),
        ])
        .into(),
    );
    cmp(e, Operator::NotEqual, vec![0; 4]);
}

/// `socket transparent 1` (raw: the crate has no `socket`).
fn socket_transparent(e: &mut Exprs) {
    e.push(
        Expressions::Other {
            expression_type: "socket".into(),
            attributes: vec![
                DefaultNla::new(
                    NFTA_SOCKET_KEY,
                    NFT_SOCKET_TRANSPARENT.to_be_bytes().to_vec(),
                ),
                DefaultNla::new(NFTA_SOCKET_DREG, reg(Register::Reg1).to_vec()),
            ],
        }
        .into(),
    );
    cmp(e, Operator::Equal, vec![1]);
}

/// `tproxy ip|ip6 to :port meta mark set MARK accept` (raw `tproxy`).
fn tproxy(e: &mut Exprs, family: Family, port: u16, mark: u32) {
    load(e, port.to_be_bytes().to_vec());
    e.push(
        Expressions::Other {
            expression_type: "tproxy".into(),
            attributes: vec![
                DefaultNla::new(
                    NFTA_TPROXY_FAMILY,
                    u32::from(u8::from(nfproto(family))).to_be_bytes().to_vec(),
                ),
                DefaultNla::new(NFTA_TPROXY_REG_PORT, reg(Register::Reg1).to_vec()),
            ],
        }
        .into(),
    );
    load(e, mark.to_ne_bytes().to_vec());
    meta_set(e, MetaKey::Mark);
    verdict(e, Verdict::Other(NF_ACCEPT), None);
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
    let has_port = r
        .matches
        .iter()
        .any(|m| matches!(m, Match::Dport(_) | Match::Sport(_)));
    let proto = r.proto();
    let udp = proto == Some("udp");
    let mut l4 = false;
    if proto.is_some() && !has_port {
        l4proto(&mut e, udp);
        l4 = true;
    }
    for m in &r.matches {
        match m {
            Match::CtInvalid => ct_invalid(&mut e),
            Match::Mark(v) | Match::NotMark(v) => {
                meta(&mut e, MetaKey::Mark);
                let op = match m {
                    Match::Mark(_) => Operator::Equal,
                    _ => Operator::NotEqual,
                };
                cmp(&mut e, op, v.to_ne_bytes().to_vec());
            }
            Match::ConnMark(v) => {
                ct_load(&mut e, NFT_CT_MARK);
                cmp(&mut e, Operator::Equal, v.to_ne_bytes().to_vec());
            }
            Match::SocketTransparent => socket_transparent(&mut e),
            _ => {}
        }
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
        let (offset, p) = match m {
            Match::Sport(p) => (0, p),
            Match::Dport(p) => (2, p),
            _ => continue,
        };
        // nft's dependency of a port match, right before it.
        if !l4 {
            l4proto(&mut e, udp);
            l4 = true;
        }
        payload(&mut e, NFT_PAYLOAD_TRANSPORT_HEADER, offset, 2);
        cmp(&mut e, Operator::Equal, p.to_be_bytes().to_vec());
    }
    match r.target {
        Target::Jump(c) => verdict(&mut e, Verdict::Jump, Some(chain_name(c))),
        Target::Return => verdict(&mut e, Verdict::Return, None),
        Target::Accept => verdict(&mut e, Verdict::Other(NF_ACCEPT), None),
        Target::Drop => verdict(&mut e, Verdict::Other(NF_DROP), None),
        Target::Redirect(p) => redirect(&mut e, p),
        Target::Tproxy { family, port, mark } => tproxy(&mut e, family, port, mark),
        Target::SetMark(v) => {
            load(&mut e, v.to_ne_bytes().to_vec());
            meta_set(&mut e, MetaKey::Mark);
        }
        Target::SaveMark => {
            meta(&mut e, MetaKey::Mark);
            ct_set(&mut e, NFT_CT_MARK);
        }
        Target::RestoreMark => {
            ct_load(&mut e, NFT_CT_MARK);
            meta_set(&mut e, MetaKey::Mark);
        }
        Target::CtZone(z) => {
            load(&mut e, z.to_ne_bytes().to_vec());
            ct_set(&mut e, NFT_CT_ZONE);
        }
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

/// A base chain's hook, priority and type, as `nft::hook_decl` declares it.
fn hook(c: Chain) -> Option<(InetHookNumber, i32, &'static str)> {
    use InetHookNumber::{LocalOut, PreRouting};
    Some(match c {
        Chain::Prerouting => (PreRouting, PRIORITY_DSTNAT, "nat"),
        Chain::Output => (LocalOut, PRIORITY_DSTNAT, "nat"),
        Chain::ManglePrerouting => (PreRouting, PRIORITY_MANGLE, "filter"),
        Chain::MangleOutput => (LocalOut, PRIORITY_MANGLE, "route"),
        Chain::RawPrerouting => (PreRouting, PRIORITY_RAW, "filter"),
        Chain::RawOutput => (LocalOut, PRIORITY_RAW, "filter"),
        _ => return None,
    })
}

/// The batch `nft::render_apply` describes: create the table if needed,
/// flush its rules, (re)declare the chains, append the rules.
pub fn apply_batch(plan: &Plan) -> (Vec<u8>, Vec<String>) {
    converge_batch(plan, &[])
}

/// `apply_batch`, also deleting the `stale` chains (after the flush, so
/// nothing jumps to them any more).
fn converge_batch(plan: &Plan, stale: &[String]) -> (Vec<u8>, Vec<String>) {
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
    for c in plan.chains() {
        let mut attributes = vec![
            ChainAttribute::Table(table.into()),
            ChainAttribute::Name(chain_name(c).into()),
        ];
        if let Some((h, priority, kind)) = hook(c) {
            attributes.extend([
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(h)),
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Policy(NF_ACCEPT),
                ChainAttribute::Type(kind.into()),
            ]);
        }
        b.msg(
            inet,
            NfTablesMessage::NewChain(ChainMessage { attributes }),
            NLM_F_CREATE,
            format!("add chain {}", chain_name(c)),
        );
    }
    for c in stale {
        b.msg(
            inet,
            NfTablesMessage::DeleteChain(ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(table.into()),
                    ChainAttribute::Name(c.clone()),
                ],
            }),
            0,
            format!("delete chain {c}"),
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
    for c in plan.chains() {
        if c.is_hook() && !plan.ipv6 {
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
/// `table` (nat, mangle or raw): the jumps to them (chain, rule handle),
/// then the chains, flushed and deleted.
fn xt_batch(
    family: Family,
    xt_table: &str,
    chains: &[String],
    jumps: &[(String, u64)],
) -> (Vec<u8>, Vec<String>) {
    let family = nfproto(family);
    let table = || xt_table.to_string();
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
fn dump_request(family: NetfilterProtoFamily, m: NfTablesMessage) -> Vec<u8> {
    let header = NetfilterHeader::new(family, 0, 0);
    let msg = request(header, m.into(), NLM_F_REQUEST | NLM_F_DUMP, 1);
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// Dump `m` (chains, or rules) of `family`: the nf_tables messages of the
/// replies. No such table is an empty answer.
fn dump(
    sock: &Socket,
    family: NetfilterProtoFamily,
    m: NfTablesMessage,
) -> Result<Vec<NfTablesMessage>> {
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

/// iptables-nft keeps its tables as nf_tables tables (`ip nat`, `ip6
/// mangle`, ...; `tables` are the ones the plan uses),
/// so multimesh's chains there can be removed over netlink too, with the
/// same effect as the `-D`/`-F`/`-X` restore and without the
/// `iptables-nft-restore` process (whose exit, right after a deletion,
/// holds the netns's nf_tables mutex for a grace period; see the module
/// doc): list the table's chains and rules, then one batch deletes the
/// jumps to ours (by handle), flushes ours and deletes them. Whatever of
/// ours is there is removed; nothing else is touched.
pub fn remove_xt(ns: &NetNs, prefix: &str, families: &[Family], tables: &[&str]) -> Result<()> {
    let sock = socket_in(ns)?;
    let r = families.iter().try_for_each(|f| {
        tables
            .iter()
            .try_for_each(|t| remove_xt_on(&sock, prefix, *f, t))
    });
    linger(sock);
    r
}

fn remove_xt_on(sock: &Socket, prefix: &str, family: Family, xt_table: &str) -> Result<()> {
    let all_chains = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
    let chains: Vec<String> = dump(sock, nfproto(family), all_chains)?
        .iter()
        .filter_map(|m| match m {
            NfTablesMessage::NewChain(c) => Some(chain_of(c)),
            _ => None,
        })
        .filter(|(table, _)| *table == Some(xt_table))
        .filter_map(|(_, name)| name.filter(|n| n.starts_with(prefix)).map(String::from))
        .collect();
    let table_rules = NfTablesMessage::GetRule(RuleMessage {
        attributes: vec![RuleAttribute::Table(xt_table.into())],
    });
    let mut jumps: Vec<(String, u64)> = Vec::new();
    for m in dump(sock, nfproto(family), table_rules)? {
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
    send_batch(sock, xt_batch(family, xt_table, &chains, &jumps))
}

/// Converge the netns's table to `plan`: the chains a differing earlier
/// plan declared (another attachment of this netns asked for another mode)
/// are listed first and deleted in the same transaction, so the table is
/// exactly the plan's and CHECK sees no drift.
pub fn apply(plan: &Plan, ns: &NetNs) -> Result<()> {
    let sock = socket_in(ns)?;
    let r =
        stale_chains(&sock, plan).and_then(|stale| send_batch(&sock, converge_batch(plan, &stale)));
    linger(sock);
    r
}

/// The chains of table `inet multimesh` that `plan` does not declare (none
/// when the table does not exist yet).
fn stale_chains(sock: &Socket, plan: &Plan) -> Result<Vec<String>> {
    let table = super::nft::TABLE;
    let ours: Vec<&str> = plan.chains().into_iter().map(chain_name).collect();
    let all = NfTablesMessage::GetChain(ChainMessage {
        attributes: vec![ChainAttribute::Table(table.into())],
    });
    Ok(dump(sock, NetfilterProtoFamily::Inet, all)?
        .iter()
        .filter_map(|m| match m {
            NfTablesMessage::NewChain(c) => Some(chain_of(c)),
            _ => None,
        })
        .filter(|(t, _)| *t == Some(table))
        .filter_map(|(_, name)| name)
        .filter(|n| !ours.contains(n))
        .map(String::from)
        .collect())
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
    use crate::capture::{CaptureConfig, PortSet, Profile};

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
        if rng.chance(30) {
            c.interception = crate::capture::Interception::Tproxy;
        }
        c.dns_capture = rng.chance(30);
        c.dns_port = rng.next() as u16;
        c.drop_invalid = rng.chance(30);
        c.reroute_interfaces = rng.ifnames();
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
            out.push(with(&|c| {
                c.interception = crate::capture::Interception::Tproxy
            }));
            out.push(with(&|c| c.dns_capture = true));
            out.push(with(&|c| c.drop_invalid = true));
            out.push(with(&|c| c.reroute_interfaces = vec!["net1".into()]));
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

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// Every batch, for every option of both profiles, single- and
    /// dual-stack, parses back with the crate: BATCH_BEGIN, one
    /// acknowledged nf_tables message per step (numbered 1..), BATCH_END;
    /// one rule message per rule (plus the single-stack returns).
    #[test]
    fn batches_are_well_formed_and_one_transaction() {
        let mut rng = Rng(0x006e_6674_6e6c);
        let mut configs = named_configs();
        configs.extend((0..200).map(|_| random_config(&mut rng)));
        for cfg in &configs {
            for ipv6 in [false, true] {
                let plan = Plan::new(cfg, ipv6);
                let (buf, what) = apply_batch(&plan);
                let msgs = messages(&buf);
                assert_eq!(msgs.len(), what.len() + 2);
                let mut rules = 0;
                for (i, (_, m)) in msgs.iter().enumerate() {
                    assert_eq!(m.header.sequence_number as usize, i);
                    let NetlinkPayload::InnerMessage(nf) = &m.payload else {
                        panic!("{m:?}");
                    };
                    match &nf.inner {
                        NetfilterMessageInner::None(ControlMessage::BatchBegin) => assert_eq!(i, 0),
                        NetfilterMessageInner::None(ControlMessage::BatchEnd) => {
                            assert_eq!(i, msgs.len() - 1)
                        }
                        NetfilterMessageInner::NfTables(t) => {
                            assert!(m.header.flags & NLM_F_ACK != 0);
                            assert_eq!(nf.header.family, NetfilterProtoFamily::Inet);
                            rules += usize::from(matches!(t, NfTablesMessage::NewRule(_)));
                        }
                        other => panic!("{other:?}"),
                    }
                }
                // One rule message per rule, plus the single-stack return
                // in each base chain.
                let hooks = plan.chains().iter().filter(|c| c.is_hook()).count();
                let expect =
                    crate::capture::nft::merged_rules(&plan).len() + if ipv6 { 0 } else { hooks };
                assert_eq!(rules, expect);
                assert_eq!(what.len(), 2 + plan.chains().len() + expect);
            }
        }
        let (buf, what) = remove_batch();
        assert_eq!(messages(&buf).len(), 4);
        assert_eq!(
            what,
            ["add table inet multimesh", "delete table inet multimesh"]
        );
    }

    /// Byte-level goldens (from the hand-written encoder this one replaced,
    /// whose output `nft list` reads back as `nft::render_table`'s text):
    /// the DEL batch, a base chain, a redirect (the raw `redir`
    /// expression) and a CIDR match (payload, bitwise, cmp).
    #[test]
    fn batches_match_the_golden_bytes() {
        let remove = concat!(
            "140000001000010000000000000000000000000a24000000000a050401000000",
            "00000000010000000e0001006d756c74696d65736800000024000000020a0500",
            "0200000000000000010000000e0001006d756c74696d65736800000014000000",
            "1100010003000000000000000000000a",
        );
        assert_eq!(hex(&remove_batch().0), remove);
        let mut cfg = CaptureConfig::defaults(Profile::Istio);
        cfg.exclude_outbound_cidrs = vec!["198.51.100.0/24".parse().unwrap()];
        let (buf, what) = apply_batch(&Plan::new(&cfg, false));
        let msgs = messages(&buf);
        let golden = [
            (
                3,
                "add chain prerouting",
                concat!(
                    "58000000030a05040300000000000000010000000e0001006d756c74696d6573",
                    "680000000f000300707265726f7574696e670000140004800800010000000000",
                    "08000200ffffff9c0800050000000001080007006e617400",
                ),
            ),
            (
                18,
                "add rule inbound_redirect: meta l4proto tcp redirect to :15006",
                concat!(
                    "e0000000060a050c1200000000000000010000000e0001006d756c74696d6573",
                    "6800000015000200696e626f756e645f726564697265637400000000a4000480",
                    "24000180090001006d6574610000000014000280080001000000000108000200",
                    "000000102c00018008000100636d700020000280080001000000000108000200",
                    "000000000c00038005000100060000002c0001800e000100696d6d6564696174",
                    "650000001800028008000100000000010c000280060001003a9e000024000180",
                    "0a00010072656469720000001400028008000100000000010800030000000002",
                ),
            ),
            (
                28,
                "add rule outbound: ip daddr 198.51.100.0/24 return",
                concat!(
                    "5c010000060a050c1c00000000000000010000000e0001006d756c74696d6573",
                    "680000000d0002006f7574626f756e6400000000280104802400018009000100",
                    "6d65746100000000140002800800010000000001080002000000000f2c000180",
                    "08000100636d700020000280080001000000000108000200000000000c000380",
                    "0500010002000000340001800c0001007061796c6f6164002400028008000100",
                    "0000000108000200000000010800030000000010080004000000000444000180",
                    "0c00010062697477697365003400028008000100000000010800020000000001",
                    "08000300000000040c00048008000100ffffff000c0005800800010000000000",
                    "2c00018008000100636d70002000028008000100000000010800020000000000",
                    "0c00038008000100c6336400300001800e000100696d6d656469617465000000",
                    "1c0002800800010000000000100002800c00028008000100fffffffb",
                ),
            ),
        ];
        for (i, step, bytes) in golden {
            assert_eq!(what[i - 1], step);
            assert_eq!(hex(msgs[i].0), bytes, "{step}");
        }
    }

    /// The remove_xt batch deletes the jumps (by handle), then flushes and
    /// deletes the chains, in the table's family; its dump requests ask
    /// for every chain, and for the nat table's rules.
    #[test]
    fn iptables_nft_removal_batch() {
        let chains = ["MULTIMESH_OUTPUT".to_string()];
        let jumps = [("OUTPUT".to_string(), 0x0102_0304_0506_0708)];
        let (buf, what) = xt_batch(Family::V6, "nat", &chains, &jumps);
        assert_eq!(
            what,
            [
                "delete a jump from OUTPUT",
                "flush chain MULTIMESH_OUTPUT",
                "delete chain MULTIMESH_OUTPUT"
            ]
        );
        let msgs = messages(&buf);
        let NetlinkPayload::InnerMessage(nf) = &msgs[1].1.payload else {
            panic!();
        };
        assert_eq!(nf.header.family, NetfilterProtoFamily::IPv6);
        let NetfilterMessageInner::NfTables(NfTablesMessage::DeleteRule(r)) = &nf.inner else {
            panic!("{nf:?}");
        };
        assert_eq!(rule_place(r), (Some("OUTPUT"), Some(0x0102_0304_0506_0708)));
        // The handle travels big-endian, as the kernel dumped it.
        assert!(msgs[1].0.windows(8).any(|w| w == [1, 2, 3, 4, 5, 6, 7, 8]));
        let rules = NfTablesMessage::GetRule(RuleMessage {
            attributes: vec![RuleAttribute::Table("nat".into())],
        });
        let req = dump_request(nfproto(Family::V4), rules);
        let m = messages(&req);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1.header.flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert!(hex(&req).ends_with(&hex(b"nat\0")));
    }

    /// A rule as the kernel dumps it: the chain it jumps or goes to is
    /// read back; return has none; a truncated reply is an error, not a
    /// panic.
    #[test]
    fn jump_targets_are_read_back_from_dumped_rules() {
        let rule = |target: Option<(Verdict, &str)>| {
            let mut e = Exprs::new();
            l4proto(&mut e, false);
            match target {
                Some((v, t)) => verdict(&mut e, v, Some(t)),
                None => verdict(&mut e, Verdict::Return, None),
            }
            let m = NfTablesMessage::NewRule(RuleMessage {
                attributes: vec![
                    RuleAttribute::Table("nat".into()),
                    RuleAttribute::Chain("OUTPUT".into()),
                    RuleAttribute::Handle(9),
                    RuleAttribute::Expressions(e),
                ],
            });
            let header = NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0);
            let msg = request(header, m.into(), 0, 1);
            let mut buf = vec![0u8; msg.buffer_len()];
            msg.serialize(&mut buf);
            buf
        };
        let read = |buf: &[u8]| -> RuleMessage {
            match netlink::parse::<NetfilterMessage>(buf).unwrap().msg.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(r)),
                    ..
                }) => r,
                other => panic!("{other:?}"),
            }
        };
        for v in [Verdict::Jump, Verdict::Goto] {
            let r = read(&rule(Some((v, "MULTIMESH_OUTPUT"))));
            assert_eq!(rule_jump(&r), Some("MULTIMESH_OUTPUT"));
            assert_eq!(rule_place(&r), (Some("OUTPUT"), Some(9)));
        }
        assert_eq!(rule_jump(&read(&rule(None))), None);
        let full = rule(Some((Verdict::Jump, "MULTIMESH_OUTPUT")));
        for n in 1..full.len() {
            assert!(replies(&full[..n]).is_err(), "{n} bytes");
        }
    }

    #[test]
    fn interface_names_are_padded_like_nft() {
        for (name, sent) in [("net1", "net1"), ("abcdefghijklmnopq", "abcdefghijklmno")] {
            let mut e = Exprs::new();
            ifname(&mut e, MetaKey::Iifname, name);
            let Some(ListAttribute::Element(attrs)) = e.get(1) else {
                panic!("{e:?}");
            };
            let data = attrs.iter().find_map(|a| match a {
                ExpressionAttribute::Data(Expressions::Cmp(c)) => c.iter().find_map(|x| match x {
                    Cmp::Data(DataAttribute::Value(v)) => Some(v.clone()),
                    _ => None,
                }),
                _ => None,
            });
            // IFNAMSIZ bytes: the name (at most 15), then zeros.
            let mut want = sent.as_bytes().to_vec();
            want.resize(IFNAMSIZ, 0);
            assert_eq!(data, Some(want), "{name}");
        }
    }
}
