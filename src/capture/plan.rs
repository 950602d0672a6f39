//! The rule plan: capture options as data, independent of any backend.

use super::{CaptureConfig, PortSet, Profile};
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

/// Chains multimesh owns, plus the two built-in hooks it jumps from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Prerouting,
    Output,
    Inbound,
    InRedirect,
    Outbound,
    Redirect,
}

impl Chain {
    pub const OWN: [Chain; 4] = [
        Chain::Inbound,
        Chain::InRedirect,
        Chain::Outbound,
        Chain::Redirect,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// TCP only.
    Tcp,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Jump(Chain),
    Return,
    /// REDIRECT to this local port (TCP).
    Redirect(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub matches: Vec<Match>,
    pub target: Target,
}

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
        if inbound {
            add(Prerouting, vec![Tcp], Target::Jump(Inbound));
        }
        add(Output, vec![Tcp], Target::Jump(Outbound));

        // Inbound: TCP arriving on any interface (eth0, net1, ...).
        if inbound {
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
        match c.profile {
            Profile::Istio => {
                // Inbound traffic the proxy forwards to the app from 127.0.0.6.
                add(Outbound, vec![Src(passthrough), lo()], Target::Return);
                let mut owner = vec![(Uid(c.proxy_uid), NotUid(c.proxy_uid))];
                if let Some(g) = c.proxy_gid {
                    owner.push((Gid(g), NotGid(g)));
                }
                for (is, is_not) in owner {
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
