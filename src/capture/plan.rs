//! The rule plan: capture options as data, independent of any backend.

use super::{CaptureConfig, Interception, PortSet, Profile};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// An address prefix; the address is masked to the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    pub fn host(addr: IpAddr) -> Cidr {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, len }
    }
}

impl FromStr for Cidr {
    type Err = String;
    /// An address or an address/prefix (ipnetwork), host bits masked off.
    /// Stricter than ipnetwork alone: the prefix is 1–3 ASCII digits (it
    /// takes `+8` too), so nothing but a number follows the `/`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR");
        if let Some((_, l)) = s.split_once('/') {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
        }
        let net = ipnetwork::IpNetwork::from_str(s).map_err(|e| match e {
            ipnetwork::IpNetworkError::InvalidPrefix => {
                format!("{s:?}: prefix length out of range")
            }
            _ => bad(),
        })?;
        Ok(Cidr {
            addr: net.network(),
            len: net.prefix(),
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The tables capture uses. `Nat` holds the REDIRECT capture; `Mangle`
/// the TPROXY capture and `dropInvalid`; `Raw` the DNS conntrack zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nat,
    Mangle,
    Raw,
}

impl Table {
    /// In the order a restore payload carries them (nat first: the fast
    /// path's `-N` of an existing nat chain fails before anything else is
    /// committed).
    pub const ALL: [Table; 3] = [Table::Nat, Table::Mangle, Table::Raw];
}

/// The chains capture uses: built-in hooks it jumps from, and its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    // nat
    Prerouting,
    Output,
    Inbound,
    InRedirect,
    Outbound,
    Redirect,
    /// The app's DNS (UDP and TCP port 53) to the proxy's DNS port.
    DnsRedirect,
    // mangle
    ManglePrerouting,
    MangleOutput,
    /// Invalid-drop and the TPROXY capture of inbound TCP.
    MangleInbound,
    /// Packets of flows the proxy already holds: mark and accept.
    Divert,
    TproxyRedirect,
    /// Marks of the proxy's loopback traffic, connmark restore.
    MarkOutput,
    // raw
    RawPrerouting,
    RawOutput,
    DnsZoneIn,
    DnsZoneOut,
}

impl Chain {
    pub fn table(self) -> Table {
        use Chain::*;
        match self {
            Prerouting | Output | Inbound | InRedirect | Outbound | Redirect | DnsRedirect => {
                Table::Nat
            }
            ManglePrerouting | MangleOutput | MangleInbound | Divert | TproxyRedirect
            | MarkOutput => Table::Mangle,
            RawPrerouting | RawOutput | DnsZoneIn | DnsZoneOut => Table::Raw,
        }
    }

    /// A hook (iptables' built-in chain, an nftables base chain).
    pub fn is_hook(self) -> bool {
        use Chain::*;
        matches!(
            self,
            Prerouting | Output | ManglePrerouting | MangleOutput | RawPrerouting | RawOutput
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// TCP only; `Dport`/`Sport` then are TCP ports.
    Tcp,
    /// UDP only; `Dport`/`Sport` then are UDP ports.
    Udp,
    InIface(String),
    OutIface(String),
    Src(Cidr),
    Dst(Cidr),
    NotDst(Cidr),
    Uid(u32),
    NotUid(u32),
    Gid(u32),
    NotGid(u32),
    Dport(u16),
    Sport(u16),
    /// conntrack state INVALID.
    CtInvalid,
    /// The packet's mark (full 32 bits).
    Mark(u32),
    NotMark(u32),
    /// The connection's mark.
    ConnMark(u32),
    /// A local socket with IP_TRANSPARENT owns the packet's flow (an
    /// established TPROXY connection).
    SocketTransparent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Jump(Chain),
    Return,
    Accept,
    Drop,
    /// REDIRECT to this local port (of the rule's protocol).
    Redirect(u16),
    /// TPROXY to this local port, setting `mark`, then accept.
    Tproxy {
        family: Family,
        port: u16,
        mark: u32,
    },
    /// Set the packet mark (full 32 bits).
    SetMark(u32),
    /// Copy the packet mark to the connection.
    SaveMark,
    /// Copy the connection mark to the packet.
    RestoreMark,
    /// Track the flow in this conntrack zone. The first zone set wins (the
    /// kernel ignores a later one, in xt_CT and nft_ct alike).
    CtZone(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub matches: Vec<Match>,
    pub target: Target,
}

impl Rule {
    /// The rule's protocol: UDP when it says so, TCP when it says so or
    /// matches a port, none otherwise.
    pub fn proto(&self) -> Option<&'static str> {
        if self.matches.contains(&Match::Udp) {
            Some("udp")
        } else if self
            .matches
            .iter()
            .any(|m| matches!(m, Match::Tcp | Match::Dport(_) | Match::Sport(_)))
        {
            Some("tcp")
        } else {
            None
        }
    }
}

/// The packet mark of TPROXY'd inbound flows and of the proxy's sockets
/// talking to the app with the client's address (Istio's 1337, so an
/// Istio proxy's `SO_MARK` matches).
pub const TPROXY_MARK: u32 = 1337;
/// The mark the proxy's own loopback TCP to the pod's addresses carries
/// (Istio's 1338): TPROXY'd back to the proxy as inbound.
pub const PROXY_LOOPBACK_MARK: u32 = 1338;
/// The policy-routing table that routes `TPROXY_MARK` locally (Istio's
/// 133): `fwmark 1337 lookup 133`, `local default dev lo table 133`.
pub const TPROXY_TABLE: u32 = 133;
/// The DNS port the proxy's own queries go to and the app's are
/// captured from.
pub const DNS: u16 = 53;
/// Conntrack zone of the proxy's upstream DNS flows.
pub const DNS_ZONE_UPSTREAM: u16 = 1;
/// Conntrack zone of the app's (captured) DNS flows.
pub const DNS_ZONE_APP: u16 = 2;

/// Everything a backend needs to program one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cfg: CaptureConfig,
    pub ipv6: bool,
}

fn loopback(f: Family) -> (Cidr, Cidr) {
    // (inbound passthrough source the proxy uses, the loopback address)
    match f {
        Family::V4 => (
            Cidr::host("127.0.0.6".parse().unwrap()),
            Cidr::host("127.0.0.1".parse().unwrap()),
        ),
        Family::V6 => (
            Cidr::host("::6".parse().unwrap()),
            Cidr::host("::1".parse().unwrap()),
        ),
    }
}

impl Plan {
    pub fn new(cfg: &CaptureConfig, ipv6: bool) -> Plan {
        Plan {
            cfg: cfg.clone(),
            ipv6,
        }
    }

    pub fn families(&self) -> Vec<Family> {
        if self.ipv6 {
            vec![Family::V4, Family::V6]
        } else {
            vec![Family::V4]
        }
    }

    pub fn inbound_enabled(&self) -> bool {
        !matches!(&self.cfg.inbound, PortSet::Only(p) if p.is_empty())
    }

    /// Inbound TCP is captured with TPROXY (mangle) rather than REDIRECT.
    pub fn tproxy(&self) -> bool {
        self.cfg.interception == Interception::Tproxy && self.inbound_enabled()
    }

    fn mangle(&self) -> bool {
        self.tproxy() || self.cfg.drop_invalid
    }

    /// Every chain the plan programs, hooks first within each table, in
    /// the order listings show them. The REDIRECT capture's six chains are
    /// always there; the others only with their option.
    pub fn chains(&self) -> Vec<Chain> {
        use Chain::*;
        let mut c = vec![Prerouting, Output, Inbound, InRedirect, Outbound, Redirect];
        if self.cfg.dns_capture {
            c.push(DnsRedirect);
        }
        if self.mangle() {
            c.extend([ManglePrerouting, MangleOutput, MangleInbound]);
        }
        if self.tproxy() {
            c.extend([Divert, TproxyRedirect, MarkOutput]);
        }
        if self.cfg.dns_capture {
            c.extend([RawPrerouting, RawOutput, DnsZoneIn, DnsZoneOut]);
        }
        c
    }

    /// The tables the plan programs, in `Table::ALL` order.
    pub fn tables(&self) -> Vec<Table> {
        let chains = self.chains();
        Table::ALL
            .into_iter()
            .filter(|t| chains.iter().any(|c| c.table() == *t))
            .collect()
    }

    /// The chains of `table` that are the plan's own (not hooks).
    pub fn own_chains(&self, table: Table) -> Vec<Chain> {
        self.chains()
            .into_iter()
            .filter(|c| c.table() == table && !c.is_hook())
            .collect()
    }

    /// The rules for one address family, in order.
    pub fn rules(&self, fam: Family) -> Vec<Rule> {
        use Chain::*;
        use Match::*;
        let c = &self.cfg;
        let mut r = Vec::new();
        let mut add = |chain: Chain, matches: Vec<Match>, target: Target| {
            r.push(Rule {
                chain,
                matches,
                target,
            })
        };
        let inbound = self.inbound_enabled();
        let tproxy = self.tproxy();
        // nat PREROUTING enters the inbound chain for REDIRECT capture and
        // for rerouted interfaces.
        let nat_inbound = (inbound && !tproxy) || !c.reroute_interfaces.is_empty();
        if nat_inbound {
            add(Prerouting, vec![Tcp], Target::Jump(Inbound));
        }
        if c.dns_capture {
            add(Output, vec![Udp, Dport(DNS)], Target::Jump(DnsRedirect));
            add(Output, vec![Tcp, Dport(DNS)], Target::Jump(DnsRedirect));
        }
        add(Output, vec![Tcp], Target::Jump(Outbound));

        // Inbound: TCP arriving on any interface (eth0, net1, ...); TCP
        // arriving on a rerouted interface is the app's outbound.
        for i in &c.reroute_interfaces {
            add(Inbound, vec![InIface(i.clone())], Target::Jump(Redirect));
        }
        if inbound && !tproxy {
            for i in &c.exclude_interfaces {
                add(Inbound, vec![InIface(i.clone())], Target::Return);
            }
            match &c.inbound {
                PortSet::AllExcept(ex) => {
                    for p in ex {
                        add(Inbound, vec![Tcp, Dport(*p)], Target::Return);
                    }
                    add(Inbound, vec![Tcp], Target::Jump(InRedirect));
                }
                PortSet::Only(ports) => {
                    for p in ports {
                        add(Inbound, vec![Tcp, Dport(*p)], Target::Jump(InRedirect));
                    }
                }
            }
        }
        add(InRedirect, vec![Tcp], Target::Redirect(c.inbound_port));

        // Outbound: TCP the app opens.
        for i in &c.exclude_interfaces {
            add(Outbound, vec![OutIface(i.clone())], Target::Return);
        }
        let (passthrough, lo_addr) = loopback(fam);
        let lo = || OutIface("lo".into());
        let mut owner = vec![(Uid(c.proxy_uid), NotUid(c.proxy_uid))];
        if let Some(g) = c.proxy_gid {
            owner.push((Gid(g), NotGid(g)));
        }
        match c.profile {
            Profile::Istio => {
                // Inbound traffic the proxy forwards to the app from 127.0.0.6.
                add(Outbound, vec![Src(passthrough), lo()], Target::Return);
                for (is, is_not) in owner.clone() {
                    // The proxy calling the pod's own address (app-to-self
                    // through the proxy): handle it as inbound.
                    if inbound {
                        add(
                            Outbound,
                            vec![NotDst(lo_addr), lo(), Tcp, is.clone()],
                            Target::Jump(InRedirect),
                        );
                    }
                    // Other loopback traffic of the app stays direct.
                    add(Outbound, vec![lo(), is_not], Target::Return);
                    // The proxy's own traffic is never captured.
                    add(Outbound, vec![is], Target::Return);
                }
                add(Outbound, vec![Dst(lo_addr)], Target::Return);
            }
            Profile::Linkerd => {
                add(Outbound, vec![Uid(c.proxy_uid)], Target::Return);
                if let Some(g) = c.proxy_gid {
                    add(Outbound, vec![Gid(g)], Target::Return);
                }
                add(Outbound, vec![lo()], Target::Return);
            }
        }
        for p in &c.exclude_outbound_ports {
            add(Outbound, vec![Tcp, Dport(*p)], Target::Return);
        }
        for p in &c.include_outbound_ports {
            add(Outbound, vec![Tcp, Dport(*p)], Target::Jump(Redirect));
        }
        for cidr in c
            .exclude_outbound_cidrs
            .iter()
            .filter(|x| x.family() == fam)
        {
            add(Outbound, vec![Dst(*cidr)], Target::Return);
        }
        match &c.include_outbound_cidrs {
            None => add(Outbound, vec![], Target::Jump(Redirect)),
            Some(list) => {
                for cidr in list.iter().filter(|x| x.family() == fam) {
                    add(Outbound, vec![Dst(*cidr)], Target::Jump(Redirect));
                }
            }
        }
        add(Redirect, vec![Tcp], Target::Redirect(c.outbound_port));

        // DNS: the app's queries (UDP and TCP) go to the proxy's DNS port;
        // the proxy's own are left alone.
        if c.dns_capture {
            for i in &c.exclude_interfaces {
                add(DnsRedirect, vec![OutIface(i.clone())], Target::Return);
            }
            for (is, _) in &owner {
                add(DnsRedirect, vec![is.clone()], Target::Return);
            }
            add(
                DnsRedirect,
                vec![Udp, Dport(DNS)],
                Target::Redirect(c.dns_port),
            );
            add(
                DnsRedirect,
                vec![Tcp, Dport(DNS)],
                Target::Redirect(c.dns_port),
            );
        }

        // mangle: invalid-drop, then the TPROXY capture of inbound TCP.
        if self.mangle() {
            let entry = if c.drop_invalid { vec![] } else { vec![Tcp] };
            add(ManglePrerouting, entry, Target::Jump(MangleInbound));
        }
        if c.drop_invalid {
            add(MangleInbound, vec![CtInvalid], Target::Drop);
        }
        if tproxy {
            add(MangleOutput, vec![Tcp], Target::Jump(MarkOutput));
            // The proxy's sockets to the app (marked by the proxy) and
            // loopback traffic other than the proxy's to the pod's own
            // addresses are not inbound.
            add(MangleInbound, vec![Tcp, Mark(TPROXY_MARK)], Target::Return);
            add(
                MangleInbound,
                vec![Src(passthrough), InIface("lo".into()), Tcp],
                Target::Return,
            );
            add(
                MangleInbound,
                vec![InIface("lo".into()), Tcp, NotMark(PROXY_LOOPBACK_MARK)],
                Target::Return,
            );
            for i in c.exclude_interfaces.iter().chain(&c.reroute_interfaces) {
                add(MangleInbound, vec![InIface(i.clone())], Target::Return);
            }
            let established = vec![Tcp, SocketTransparent];
            match &c.inbound {
                PortSet::AllExcept(ex) => {
                    for p in ex {
                        add(MangleInbound, vec![Tcp, Dport(*p)], Target::Return);
                    }
                    add(MangleInbound, established, Target::Jump(Divert));
                    add(MangleInbound, vec![Tcp], Target::Jump(TproxyRedirect));
                }
                PortSet::Only(ports) => {
                    add(MangleInbound, established, Target::Jump(Divert));
                    for p in ports {
                        add(
                            MangleInbound,
                            vec![Tcp, Dport(*p)],
                            Target::Jump(TproxyRedirect),
                        );
                    }
                }
            }
            add(
                MangleInbound,
                vec![Tcp, Mark(TPROXY_MARK)],
                Target::SaveMark,
            );
            add(Divert, vec![], Target::SetMark(TPROXY_MARK));
            add(Divert, vec![], Target::Accept);
            add(
                TproxyRedirect,
                vec![NotDst(lo_addr), Tcp],
                Target::Tproxy {
                    family: fam,
                    port: c.inbound_port,
                    mark: TPROXY_MARK,
                },
            );
            add(
                MarkOutput,
                vec![lo(), Tcp, Mark(TPROXY_MARK)],
                Target::Return,
            );
            for (is, _) in &owner {
                add(
                    MarkOutput,
                    vec![NotDst(lo_addr), lo(), Tcp, is.clone()],
                    Target::SetMark(PROXY_LOOPBACK_MARK),
                );
            }
            add(
                MarkOutput,
                vec![Tcp, ConnMark(TPROXY_MARK)],
                Target::RestoreMark,
            );
        }

        // raw: conntrack zones keep the app's DNS flows (zone 2: app to
        // the proxy, its replies) apart from the proxy's upstream ones
        // (zone 1), whose tuples would otherwise clash.
        if c.dns_capture {
            add(RawOutput, vec![Udp], Target::Jump(DnsZoneOut));
            add(RawPrerouting, vec![Udp], Target::Jump(DnsZoneIn));
            for (is, _) in &owner {
                add(
                    DnsZoneOut,
                    vec![Udp, is.clone(), Dport(DNS)],
                    Target::CtZone(DNS_ZONE_UPSTREAM),
                );
                add(
                    DnsZoneOut,
                    vec![Udp, is.clone(), Sport(c.dns_port)],
                    Target::CtZone(DNS_ZONE_APP),
                );
            }
            add(
                DnsZoneOut,
                vec![Udp, Dport(DNS)],
                Target::CtZone(DNS_ZONE_APP),
            );
            add(
                DnsZoneIn,
                vec![Udp, Sport(DNS)],
                Target::CtZone(DNS_ZONE_UPSTREAM),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_mask() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "198.51.100.7".parse::<Cidr>().unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            "2001:db8::1/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().len, 0);
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4/33",
            "::/129",
            "1.2.3.4/",
            "1.2.3.4/+1",
            "x/8",
            "1.2.3.4/8 -j ACCEPT",
            "1.2.3.4/ 8",
            "1.2.3.4/0008",
            "01.2.3.4/8",
            "[::1]/8",
            "::ffff:1.2.3.4/200",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} should be refused");
        }
    }
}
