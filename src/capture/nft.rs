//! nftables backend: one `inet multimesh` table, replaced in one atomic
//! transaction inside the pod netns. This module renders it as text (the
//! form `nft list table` prints, so CHECK compares text, and what
//! `multimesh rules` shows); `nftnl` sends the same transaction over
//! netlink. CHECK lists the table with `nft`.

use super::plan::{Chain, Family, Match, Plan, Rule, Target};
use super::{find_tool, TOOL_TIMEOUT};
use crate::error::{code, CniError, Result};
use crate::netns::{run_tool, NetNs};
use std::fmt::Write as _;

pub const TABLE: &str = "multimesh";

pub(crate) fn chain_name(c: Chain) -> &'static str {
    use Chain::*;
    match c {
        Prerouting => "prerouting",
        Output => "output",
        Inbound => "inbound",
        InRedirect => "inbound_redirect",
        Outbound => "outbound",
        Redirect => "outbound_redirect",
        DnsRedirect => "dns_redirect",
        ManglePrerouting => "mangle_prerouting",
        MangleOutput => "mangle_output",
        MangleInbound => "mangle_inbound",
        Divert => "divert",
        TproxyRedirect => "tproxy_redirect",
        MarkOutput => "mark_output",
        RawPrerouting => "raw_prerouting",
        RawOutput => "raw_output",
        DnsZoneIn => "dns_zone_in",
        DnsZoneOut => "dns_zone_out",
    }
}

/// A base chain's declaration (type, hook, priority), as written; `nft -n`
/// prints the priority as a number (see `numeric`).
pub(crate) fn hook_decl(c: Chain) -> Option<&'static str> {
    use Chain::*;
    Some(match c {
        Prerouting => "type nat hook prerouting priority dstnat; policy accept;",
        Output => "type nat hook output priority -100; policy accept;",
        ManglePrerouting => "type filter hook prerouting priority mangle; policy accept;",
        // A route chain: a mark set here re-routes the packet.
        MangleOutput => "type route hook output priority mangle; policy accept;",
        RawPrerouting => "type filter hook prerouting priority raw; policy accept;",
        RawOutput => "type filter hook output priority raw; policy accept;",
        _ => return None,
    })
}

fn is_family_specific(r: &Rule) -> bool {
    r.matches
        .iter()
        .any(|m| matches!(m, Match::Src(_) | Match::Dst(_) | Match::NotDst(_)))
}

/// One `inet` rule list from the per-family lists: rules that name an
/// address only ever match their own family, so they are interleaved in
/// place, and family-independent rules appear once.
pub fn merged_rules(plan: &Plan) -> Vec<Rule> {
    let a = plan.rules(Family::V4);
    let b = if plan.ipv6 {
        plan.rules(Family::V6)
    } else {
        Vec::new()
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && is_family_specific(&a[i]) {
            out.push(a[i].clone());
            i += 1;
        } else if j < b.len() && is_family_specific(&b[j]) {
            out.push(b[j].clone());
            j += 1;
        } else if i < a.len() {
            out.push(a[i].clone());
            i += 1;
            j += 1;
        } else {
            // Only reachable if the lists diverge; keep the v6 rule.
            out.push(b[j].clone());
            j += 1;
        }
    }
    out
}

fn addr(c: &super::Cidr) -> String {
    let host = if c.family() == Family::V4 { 32 } else { 128 };
    if c.len == host {
        c.addr.to_string()
    } else {
        c.to_string()
    }
}

fn fam_kw(c: &super::Cidr) -> &'static str {
    if c.family() == Family::V4 {
        "ip"
    } else {
        "ip6"
    }
}

fn mark(m: u32) -> String {
    format!("{m:#010x}")
}

pub fn rule_text(r: &Rule) -> String {
    let mut parts: Vec<String> = Vec::new();
    for m in &r.matches {
        if let Match::Src(c) = m {
            parts.push(format!("{} saddr {}", fam_kw(c), addr(c)));
        }
    }
    for m in &r.matches {
        match m {
            Match::Dst(c) => parts.push(format!("{} daddr {}", fam_kw(c), addr(c))),
            Match::NotDst(c) => parts.push(format!("{} daddr != {}", fam_kw(c), addr(c))),
            _ => {}
        }
    }
    for m in &r.matches {
        if let Match::InIface(i) = m {
            parts.push(format!("iifname \"{i}\""));
        }
    }
    for m in &r.matches {
        if let Match::OutIface(i) = m {
            parts.push(format!("oifname \"{i}\""));
        }
    }
    let has_port = r
        .matches
        .iter()
        .any(|m| matches!(m, Match::Dport(_) | Match::Sport(_)));
    let proto = r.proto();
    if let (Some(p), false) = (proto, has_port) {
        parts.push(format!("meta l4proto {p}"));
    }
    for m in &r.matches {
        match m {
            Match::CtInvalid => parts.push("ct state invalid".into()),
            Match::Mark(v) => parts.push(format!("meta mark {}", mark(*v))),
            Match::NotMark(v) => parts.push(format!("meta mark != {}", mark(*v))),
            Match::ConnMark(v) => parts.push(format!("ct mark {}", mark(*v))),
            Match::SocketTransparent => parts.push("socket transparent 1".into()),
            _ => {}
        }
    }
    for m in &r.matches {
        match m {
            Match::Uid(u) => parts.push(format!("meta skuid {u}")),
            Match::NotUid(u) => parts.push(format!("meta skuid != {u}")),
            Match::Gid(g) => parts.push(format!("meta skgid {g}")),
            Match::NotGid(g) => parts.push(format!("meta skgid != {g}")),
            _ => {}
        }
    }
    let p = proto.unwrap_or("tcp");
    for m in &r.matches {
        match m {
            Match::Dport(n) => parts.push(format!("{p} dport {n}")),
            Match::Sport(n) => parts.push(format!("{p} sport {n}")),
            _ => {}
        }
    }
    parts.push(match r.target {
        Target::Jump(c) => format!("jump {}", chain_name(c)),
        Target::Return => "return".into(),
        Target::Accept => "accept".into(),
        Target::Drop => "drop".into(),
        Target::Redirect(p) => format!("redirect to :{p}"),
        Target::Tproxy {
            family,
            port,
            mark: m,
        } => format!(
            "tproxy {} to :{port} meta mark set {} accept",
            if family == Family::V4 { "ip" } else { "ip6" },
            mark(m)
        ),
        Target::SetMark(v) => format!("meta mark set {}", mark(v)),
        Target::SaveMark => "ct mark set meta mark".into(),
        Target::RestoreMark => "meta mark set ct mark".into(),
        Target::CtZone(z) => format!("ct zone set {z}"),
    });
    parts.join(" ")
}

/// The table as `nft list table inet multimesh` prints it: the plan's
/// chains in order (`Plan::chains`), each with its rules.
pub fn render_table(plan: &Plan) -> String {
    let rules = merged_rules(plan);
    let mut s = format!("table inet {TABLE} {{\n");
    for (n, c) in plan.chains().into_iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        let _ = writeln!(s, "\tchain {} {{", chain_name(c));
        if let Some(decl) = hook_decl(c) {
            let _ = writeln!(s, "\t\t{decl}");
            if !plan.ipv6 {
                // No IPv6 on this pod: leave IPv6 alone, as iptables mode does.
                s.push_str("\t\tmeta nfproto ipv6 return\n");
            }
        }
        for r in rules.iter().filter(|r| r.chain == c) {
            let _ = writeln!(s, "\t\t{}", rule_text(r));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// One transaction: make sure the table exists, flush its rules, define it
/// anew. Unlike delete-and-recreate, flushing never unregisters the base
/// chains' hooks, which costs the kernel an RCU grace period (~10-20 ms).
/// Chain names and hooks never change, so redefining them is a no-op.
pub fn render_apply(plan: &Plan) -> String {
    format!(
        "table inet {TABLE}\nflush table inet {TABLE}\n{}",
        render_table(plan)
    )
}

fn nft() -> Result<std::path::PathBuf> {
    find_tool("nft").ok_or_else(|| {
        CniError::new(
            code::CAPTURE_APPLY,
            "nft not found in PATH (install nftables)",
        )
    })
}

fn run(ns: &NetNs, args: &[&str], stdin: &str) -> Result<crate::netns::ToolOutput> {
    let mut cmd = ns.command(nft()?);
    cmd.args(args);
    run_tool(cmd, stdin.as_bytes(), TOOL_TIMEOUT)
        .map_err(|e| CniError::new(code::CAPTURE_APPLY, format!("run nft: {e}")))
}

/// The table as listed, or None when it does not exist.
pub fn list(ns: &NetNs) -> Result<Option<String>> {
    let out = run(ns, &["-n", "list", "table", "inet", TABLE], "")?;
    if out.ok() {
        Ok(Some(out.stdout))
    } else if out.stderr.contains("No such file") {
        Ok(None)
    } else {
        Err(CniError::new(
            code::CAPTURE_APPLY,
            format!("nft list failed: {}", out.failure()),
        ))
    }
}

/// `nft -n` prints protocols, families and priorities as numbers (and
/// never looks up user names, which is why CHECK lists with -n).
fn numeric(s: &str) -> String {
    s.replace("meta l4proto tcp", "meta l4proto 6")
        .replace("meta l4proto udp", "meta l4proto 17")
        .replace("meta nfproto ipv6", "meta nfproto 10")
        .replace("ct state invalid", "ct state 0x1")
        .replace("priority dstnat;", "priority -100;")
        .replace("priority mangle;", "priority -150;")
        .replace("priority raw;", "priority -300;")
}

fn normalize(s: &str) -> Vec<String> {
    s.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn check(plan: &Plan, ns: &NetNs) -> Result<()> {
    let actual = list(ns)?.ok_or_else(|| {
        CniError::new(
            code::CAPTURE_DRIFT,
            format!("capture rules changed: table inet {TABLE} is missing"),
        )
    })?;
    let (a, e) = (normalize(&actual), normalize(&numeric(&render_table(plan))));
    if a != e {
        let missing: Vec<_> = e.iter().filter(|l| !a.contains(l)).collect();
        let extra: Vec<_> = a.iter().filter(|l| !e.contains(l)).collect();
        return Err(CniError::new(
            code::CAPTURE_DRIFT,
            format!("capture rules changed (nftables): missing {missing:?}; unexpected {extra:?}"),
        ));
    }
    Ok(())
}
