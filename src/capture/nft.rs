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
    match c {
        Chain::Prerouting => "prerouting",
        Chain::Output => "output",
        Chain::Inbound => "inbound",
        Chain::InRedirect => "inbound_redirect",
        Chain::Outbound => "outbound",
        Chain::Redirect => "outbound_redirect",
    }
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
    let has_dport = r.matches.iter().any(|m| matches!(m, Match::Dport(_)));
    let tcp = r.matches.iter().any(|m| matches!(m, Match::Tcp))
        || matches!(r.target, Target::Redirect(_));
    if tcp && !has_dport {
        parts.push("meta l4proto tcp".into());
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
    for m in &r.matches {
        if let Match::Dport(p) = m {
            parts.push(format!("tcp dport {p}"));
        }
    }
    parts.push(match r.target {
        Target::Jump(c) => format!("jump {}", chain_name(c)),
        Target::Return => "return".into(),
        Target::Redirect(p) => format!("redirect to :{p}"),
    });
    parts.join(" ")
}

/// The table as `nft list table inet multimesh` prints it.
/// The table's chains, in the order they are listed.
pub const CHAINS: [Chain; 6] = [
    Chain::Prerouting,
    Chain::Output,
    Chain::Inbound,
    Chain::InRedirect,
    Chain::Outbound,
    Chain::Redirect,
];

pub fn render_table(plan: &Plan) -> String {
    let rules = merged_rules(plan);
    let mut s = format!("table inet {TABLE} {{\n");
    for (n, c) in CHAINS.iter().enumerate() {
        if n > 0 {
            s.push('\n');
        }
        let _ = writeln!(s, "\tchain {} {{", chain_name(*c));
        match c {
            Chain::Prerouting => {
                s.push_str("\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
            }
            Chain::Output => s.push_str("\t\ttype nat hook output priority -100; policy accept;\n"),
            _ => {}
        }
        if matches!(c, Chain::Prerouting | Chain::Output) && !plan.ipv6 {
            // No IPv6 on this pod: leave IPv6 alone, as iptables mode does.
            s.push_str("\t\tmeta nfproto ipv6 return\n");
        }
        for r in rules.iter().filter(|r| r.chain == *c) {
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
        .replace("meta nfproto ipv6", "meta nfproto 10")
        .replace("priority dstnat;", "priority -100;")
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
