//! Policy routing of the TPROXY capture, over route netlink in the pod
//! netns: `fwmark TPROXY_MARK lookup TPROXY_TABLE` and `local default dev
//! lo table TPROXY_TABLE`, per address family, so packets the mangle rules
//! marked are delivered to the proxy's transparent sockets whatever their
//! destination. The same for every backend (the rules are the backend's,
//! the routing is the kernel's).

use super::plan::{Family, TPROXY_MARK, TPROXY_TABLE};
use crate::error::{code, CniError, Result};
use crate::netlink::{link_name, Error, Rtnl, Socket};
use crate::netns::NetNs;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;

fn af(f: Family) -> AddressFamily {
    match f {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn fam_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// What of the TPROXY routing one family has.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Rules `fwmark TPROXY_MARK lookup TPROXY_TABLE`.
    pub rules: usize,
    /// `local` default routes in TPROXY_TABLE.
    pub routes: usize,
}

fn ours_rule(r: &RuleMessage) -> bool {
    let mark = r.attributes.contains(&RuleAttribute::FwMark(TPROXY_MARK));
    let table = r.attributes.contains(&RuleAttribute::Table(TPROXY_TABLE))
        || u32::from(r.header.table) == TPROXY_TABLE;
    mark && table && r.header.action == RuleAction::ToTable
}

fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(r.header.table.into())
}

fn ours_route(r: &RouteMessage) -> bool {
    table_of(r) == TPROXY_TABLE
        && r.header.kind == RouteType::Local
        && r.header.destination_prefix_length == 0
}

fn rules(sock: &mut Socket, f: Family) -> std::result::Result<Vec<RuleMessage>, Error> {
    let mut msg = RuleMessage::default();
    msg.header.family = af(f);
    Ok(sock
        .request(Rtnl::GetRule(msg), NLM_F_DUMP)?
        .into_iter()
        .filter_map(|m| match m {
            Rtnl::NewRule(r) if r.header.family == af(f) => Some(r),
            _ => None,
        })
        .filter(ours_rule)
        .collect())
}

fn routes(sock: &mut Socket, f: Family) -> std::result::Result<Vec<RouteMessage>, Error> {
    Ok(sock
        .dump_routes(af(f))?
        .into_iter()
        .filter(ours_route)
        .collect())
}

fn found_in(sock: &mut Socket, f: Family) -> std::result::Result<Found, Error> {
    Ok(Found {
        rules: rules(sock, f)?.len(),
        routes: routes(sock, f)?.len(),
    })
}

/// Program the routing for `families` (idempotent: an existing rule is
/// kept, the route replaced).
pub fn apply(ns: &NetNs, families: &[Family]) -> Result<()> {
    let families = families.to_vec();
    let done = ns.run(move || -> std::result::Result<(), Error> {
        let mut sock = Socket::open()?;
        let lo = sock
            .dump_links()?
            .iter()
            .find(|l| link_name(l) == Some("lo"))
            .map(|l| l.header.index)
            .ok_or_else(|| Error::Decode("no lo interface".into()))?;
        for f in families {
            if rules(&mut sock, f)?.is_empty() {
                let mut rule = RuleMessage::default();
                rule.header.family = af(f);
                rule.header.action = RuleAction::ToTable;
                rule.header.table = TPROXY_TABLE as u8;
                rule.attributes.push(RuleAttribute::FwMark(TPROXY_MARK));
                rule.attributes.push(RuleAttribute::FwMask(u32::MAX));
                rule.attributes.push(RuleAttribute::Table(TPROXY_TABLE));
                sock.request(Rtnl::NewRule(rule), NLM_F_ACK | NLM_F_CREATE)?;
            }
            let mut route = RouteMessage::default();
            route.header.address_family = af(f);
            route.header.table = TPROXY_TABLE as u8;
            route.header.protocol = RouteProtocol::Boot;
            route.header.scope = RouteScope::Host;
            route.header.kind = RouteType::Local;
            route.attributes.push(RouteAttribute::Table(TPROXY_TABLE));
            route.attributes.push(RouteAttribute::Oif(lo));
            sock.request(
                Rtnl::NewRoute(route),
                NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            )?;
        }
        Ok(())
    })?;
    done.map_err(|e| CniError::new(code::CAPTURE_APPLY, format!("TPROXY routing: {e}")))
}

/// Remove the routing of both families, whatever of it is there.
pub fn remove(ns: &NetNs) -> Result<()> {
    let done = ns.run(|| -> std::result::Result<(), Error> {
        let mut sock = Socket::open()?;
        for f in [Family::V4, Family::V6] {
            for r in rules(&mut sock, f)? {
                sock.request(Rtnl::DelRule(r), NLM_F_ACK)?;
            }
            for r in routes(&mut sock, f)? {
                sock.request(Rtnl::DelRoute(r), NLM_F_ACK)?;
            }
        }
        Ok(())
    })?;
    done.map_err(|e| {
        CniError::new(
            code::CAPTURE_APPLY,
            format!("removing the TPROXY routing: {e}"),
        )
    })
}

/// What each family has, both families.
pub fn found(ns: &NetNs) -> Result<[(Family, Found); 2]> {
    let done = ns.run(|| -> std::result::Result<[(Family, Found); 2], Error> {
        let mut sock = Socket::open()?;
        Ok([
            (Family::V4, found_in(&mut sock, Family::V4)?),
            (Family::V6, found_in(&mut sock, Family::V6)?),
        ])
    })?;
    done.map_err(|e| CniError::new(code::CAPTURE_APPLY, format!("TPROXY routing: {e}")))
}

/// CAPTURE_DRIFT unless exactly one rule and one route per family in
/// `families` (and none in the others).
pub fn check(ns: &NetNs, families: &[Family]) -> Result<()> {
    for (f, got) in found(ns)? {
        let want = if families.contains(&f) {
            Found {
                rules: 1,
                routes: 1,
            }
        } else {
            Found::default()
        };
        if got != want {
            return Err(CniError::new(
                code::CAPTURE_DRIFT,
                format!(
                    "capture rules changed: TPROXY routing ({}): {} rule(s) \
                     'fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}' and {} local default \
                     route(s) in table {TPROXY_TABLE}, expected {} and {}",
                    fam_name(f),
                    got.rules,
                    got.routes,
                    want.rules,
                    want.routes
                ),
            ));
        }
    }
    Ok(())
}

/// What the plan programs of routing, as `ip` commands in comments
/// (`multimesh rules`); empty without TPROXY.
pub fn render(plan: &super::Plan) -> String {
    if !plan.tproxy() {
        return String::new();
    }
    let mut s = String::from("# policy routing (route netlink, pod netns)\n");
    for f in plan.families() {
        let (flag, dst) = match f {
            Family::V4 => ("-4", "0.0.0.0/0"),
            Family::V6 => ("-6", "::/0"),
        };
        s.push_str(&format!(
            "# ip {flag} rule add fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}\n\
             # ip {flag} route add local {dst} dev lo table {TPROXY_TABLE}\n"
        ));
    }
    s
}

/// The routing as `inspect` shows it; None when there is none.
pub fn describe(ns: &NetNs) -> Result<Option<String>> {
    let mut out = String::new();
    for (f, got) in found(ns)? {
        if got == Found::default() {
            continue;
        }
        out.push_str(&format!(
            "TPROXY routing ({}): {} rule(s) fwmark {TPROXY_MARK:#x} lookup {TPROXY_TABLE}, \
             {} local default route(s) dev lo table {TPROXY_TABLE}\n",
            fam_name(f),
            got.rules,
            got.routes
        ));
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mark_and_table_pair_is_ours() {
        let mut r = RuleMessage::default();
        r.header.action = RuleAction::ToTable;
        r.attributes.push(RuleAttribute::FwMark(TPROXY_MARK));
        r.attributes.push(RuleAttribute::Table(TPROXY_TABLE));
        assert!(ours_rule(&r));
        let mut other = r.clone();
        other.attributes[0] = RuleAttribute::FwMark(TPROXY_MARK + 1);
        assert!(!ours_rule(&other));
        let mut other = r.clone();
        other.attributes[1] = RuleAttribute::Table(254);
        assert!(!ours_rule(&other));
        let mut route = RouteMessage::default();
        route.header.kind = RouteType::Local;
        route.attributes.push(RouteAttribute::Table(TPROXY_TABLE));
        assert!(ours_route(&route));
        route.header.destination_prefix_length = 8;
        assert!(!ours_route(&route));
    }
}
