//! iptables backend: one atomic `iptables-restore --noflush` per family in
//! the pod netns, with the node's variant (legacy or nft).
//!
//! Rules are rendered in the canonical form `iptables-save` prints, so CHECK
//! compares text. ADD tries a fast path first (`-N` our chains + rules: one
//! exec in a fresh netns); when any chain already exists that payload fails
//! atomically and the slow path reads `iptables-save -t nat` and writes a
//! payload that converges to the plan. DEL does the same in reverse.

use super::plan::{Chain, Family, Match, Plan, Rule, Table, Target};
use super::{find_tool, Variant, TOOL_TIMEOUT};
use crate::error::{code, CniError, Result};
use crate::netns::{run_tool, NetNs};
use std::fmt::Write as _;
use std::path::Path;

pub const CHAIN_PREFIX: &str = "MULTIMESH_";

pub fn chain_name(c: Chain) -> &'static str {
    use Chain::*;
    match c {
        Prerouting | ManglePrerouting | RawPrerouting => "PREROUTING",
        Output | MangleOutput | RawOutput => "OUTPUT",
        Inbound => "MULTIMESH_INBOUND",
        InRedirect => "MULTIMESH_IN_REDIRECT",
        Outbound => "MULTIMESH_OUTPUT",
        Redirect => "MULTIMESH_REDIRECT",
        DnsRedirect => "MULTIMESH_DNS",
        MangleInbound => "MULTIMESH_MANGLE_IN",
        Divert => "MULTIMESH_DIVERT",
        TproxyRedirect => "MULTIMESH_TPROXY",
        MarkOutput => "MULTIMESH_MARK_OUT",
        DnsZoneIn => "MULTIMESH_DNS_ZONE_IN",
        DnsZoneOut => "MULTIMESH_DNS_ZONE_OUT",
    }
}

pub fn table_name(t: Table) -> &'static str {
    match t {
        Table::Nat => "nat",
        Table::Mangle => "mangle",
        Table::Raw => "raw",
    }
}

fn table_of(name: &str) -> Option<Table> {
    Table::ALL.into_iter().find(|t| table_name(*t) == name)
}

fn hex(m: u32) -> String {
    format!("{m:#x}")
}

/// One rule in `iptables-save` canonical form, without the `-A CHAIN ` head.
pub fn rule_spec(r: &Rule) -> String {
    let mut s = String::new();
    let mut push = |x: &str| {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(x);
    };
    // iptables-save order: -s, -d, -i, -o, -p, then matches in the order
    // they were given, then -j.
    for m in &r.matches {
        if let Match::Src(c) = m {
            push(&format!("-s {c}"));
        }
    }
    for m in &r.matches {
        match m {
            Match::Dst(c) => push(&format!("-d {c}")),
            Match::NotDst(c) => push(&format!("! -d {c}")),
            _ => {}
        }
    }
    for m in &r.matches {
        if let Match::InIface(i) = m {
            push(&format!("-i {i}"));
        }
    }
    for m in &r.matches {
        if let Match::OutIface(i) = m {
            push(&format!("-o {i}"));
        }
    }
    let proto = r.proto();
    if let Some(p) = proto {
        push(&format!("-p {p}"));
    }
    for m in &r.matches {
        match m {
            Match::CtInvalid => push("-m conntrack --ctstate INVALID"),
            Match::Mark(v) => push(&format!("-m mark --mark {}", hex(*v))),
            Match::NotMark(v) => push(&format!("-m mark ! --mark {}", hex(*v))),
            Match::ConnMark(v) => push(&format!("-m connmark --mark {}", hex(*v))),
            Match::SocketTransparent => push("-m socket --transparent"),
            _ => {}
        }
    }
    for m in &r.matches {
        match m {
            Match::Uid(u) => push(&format!("-m owner --uid-owner {u}")),
            Match::NotUid(u) => push(&format!("-m owner ! --uid-owner {u}")),
            Match::Gid(g) => push(&format!("-m owner --gid-owner {g}")),
            Match::NotGid(g) => push(&format!("-m owner ! --gid-owner {g}")),
            _ => {}
        }
    }
    let p = proto.unwrap_or("tcp");
    for m in &r.matches {
        match m {
            Match::Dport(n) => push(&format!("-m {p} --dport {n}")),
            Match::Sport(n) => push(&format!("-m {p} --sport {n}")),
            _ => {}
        }
    }
    match r.target {
        Target::Jump(c) => push(&format!("-j {}", chain_name(c))),
        Target::Return => push("-j RETURN"),
        Target::Accept => push("-j ACCEPT"),
        Target::Drop => push("-j DROP"),
        Target::Redirect(p) => push(&format!("-j REDIRECT --to-ports {p}")),
        Target::Tproxy { family, port, mark } => push(&format!(
            "-j TPROXY --on-port {port} --on-ip {} --tproxy-mark {}/0xffffffff",
            if family == Family::V4 {
                "0.0.0.0"
            } else {
                "::"
            },
            hex(mark)
        )),
        Target::SetMark(v) => push(&format!("-j MARK --set-xmark {}/0xffffffff", hex(v))),
        Target::SaveMark => push("-j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff"),
        Target::RestoreMark => {
            push("-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff")
        }
        Target::CtZone(z) => push(&format!("-j CT --zone {z}")),
    }
    s
}

/// The `-A ...` lines of one table for a family, in order.
pub fn rule_lines(plan: &Plan, fam: Family, table: Table) -> Vec<String> {
    plan.rules(fam)
        .iter()
        .filter(|r| r.chain.table() == table)
        .map(|r| format!("-A {} {}", chain_name(r.chain), rule_spec(r)))
        .collect()
}

/// The fast-path ADD payload: creates our chains (fails if any exists).
pub fn render_create(plan: &Plan, fam: Family) -> String {
    let mut s = String::new();
    for t in plan.tables() {
        let _ = writeln!(s, "*{}", table_name(t));
        for c in plan.own_chains(t) {
            let _ = writeln!(s, "-N {}", chain_name(c));
        }
        for l in rule_lines(plan, fam, t) {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// The payload that converges any existing state to the plan: declaring a
/// chain in --noflush mode creates or flushes it; stale jumps are deleted,
/// and so is whatever of ours the plan no longer has.
pub fn render_converge(plan: &Plan, fam: Family, saved: &Saved) -> String {
    let mut s = String::new();
    for t in Table::ALL {
        let own = plan.own_chains(t);
        let st = saved.table(t);
        let stale: Vec<&String> = st
            .chains
            .iter()
            .filter(|c| !own.iter().any(|o| chain_name(*o) == c.as_str()))
            .collect();
        if own.is_empty() && st.jumps.is_empty() && stale.is_empty() {
            continue;
        }
        let _ = writeln!(s, "*{}", table_name(t));
        for c in &own {
            let _ = writeln!(s, ":{} - [0:0]", chain_name(*c));
        }
        for j in &st.jumps {
            let _ = writeln!(s, "-D{}", &j[2..]);
        }
        for c in &stale {
            let _ = writeln!(s, "-F {c}");
        }
        for c in &stale {
            let _ = writeln!(s, "-X {c}");
        }
        for l in rule_lines(plan, fam, t) {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// The fast-path DEL payload (fails if anything is already gone).
pub fn render_delete(plan: &Plan, fam: Family) -> String {
    let mut s = String::new();
    for t in plan.tables() {
        let _ = writeln!(s, "*{}", table_name(t));
        for l in rule_lines(plan, fam, t) {
            if !l[3..].starts_with(CHAIN_PREFIX) {
                let _ = writeln!(s, "-D{}", &l[2..]);
            }
        }
        for c in plan.own_chains(t) {
            let _ = writeln!(s, "-F {}", chain_name(c));
        }
        for c in plan.own_chains(t) {
            let _ = writeln!(s, "-X {}", chain_name(c));
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// Remove whatever of ours `saved` shows; None when nothing is there.
pub fn render_cleanup(saved: &Saved) -> Option<String> {
    let mut s = String::new();
    for t in Table::ALL {
        let st = saved.table(t);
        if st.chains.is_empty() && st.jumps.is_empty() {
            continue;
        }
        let _ = writeln!(s, "*{}", table_name(t));
        for j in &st.jumps {
            let _ = writeln!(s, "-D{}", &j[2..]);
        }
        for c in &st.chains {
            let _ = writeln!(s, "-F {c}");
        }
        for c in &st.chains {
            let _ = writeln!(s, "-X {c}");
        }
        s.push_str("COMMIT\n");
    }
    (!s.is_empty()).then_some(s)
}

/// What `iptables-save` shows of multimesh in one table.
#[derive(Debug, Default, PartialEq)]
pub struct SavedTable {
    /// Our chains that exist.
    pub chains: Vec<String>,
    /// `-A` lines in other chains that jump to ours.
    pub jumps: Vec<String>,
    /// `-A` lines of our chains, in order.
    pub own_rules: Vec<String>,
}

/// What `iptables-save` shows of multimesh, per table.
#[derive(Debug, Default, PartialEq)]
pub struct Saved {
    pub nat: SavedTable,
    pub mangle: SavedTable,
    pub raw: SavedTable,
}

impl Saved {
    pub fn table(&self, t: Table) -> &SavedTable {
        match t {
            Table::Nat => &self.nat,
            Table::Mangle => &self.mangle,
            Table::Raw => &self.raw,
        }
    }
    fn table_mut(&mut self, t: Table) -> &mut SavedTable {
        match t {
            Table::Nat => &mut self.nat,
            Table::Mangle => &mut self.mangle,
            Table::Raw => &mut self.raw,
        }
    }
    pub fn is_empty(&self) -> bool {
        Table::ALL
            .iter()
            .all(|t| self.table(*t).chains.is_empty() && self.table(*t).jumps.is_empty())
    }
}

pub fn parse_save(text: &str) -> Saved {
    let mut out = Saved::default();
    let mut table: Option<Table> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(t) = line.strip_prefix('*') {
            table = table_of(t);
            continue;
        }
        let Some(t) = table else {
            continue;
        };
        let st = out.table_mut(t);
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            if name.starts_with(CHAIN_PREFIX) {
                st.chains.push(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap_or("");
            if chain.starts_with(CHAIN_PREFIX) {
                st.own_rules.push(line.to_string());
            } else if jump_target(rest).is_some_and(|t| t.starts_with(CHAIN_PREFIX)) {
                st.jumps.push(line.to_string());
            }
        }
    }
    out
}

fn jump_target(rule: &str) -> Option<&str> {
    let mut it = rule.split_whitespace();
    while let Some(w) = it.next() {
        if w == "-j" || w == "-g" {
            return it.next();
        }
    }
    None
}

struct Tools {
    restore: std::path::PathBuf,
    save: std::path::PathBuf,
}

fn tools(variant: Variant, fam: Family) -> Result<Tools> {
    let base = match fam {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let v = match variant {
        Variant::Legacy => "legacy",
        _ => "nft",
    };
    let find = |suffix: &str| {
        find_tool(&format!("{base}-{v}-{suffix}")).ok_or_else(|| {
            CniError::new(
                code::CAPTURE_APPLY,
                format!("{base}-{v}-{suffix} not found in PATH (install iptables)"),
            )
        })
    };
    Ok(Tools {
        restore: find("restore")?,
        save: find("save")?,
    })
}

fn restore(t: &Tools, ns: &NetNs, lock: &Path, payload: &str) -> Result<crate::netns::ToolOutput> {
    let mut cmd = ns.command(&t.restore);
    // -w: wait (bounded) for the lock; the lock is per pod, not the node's
    // global /run/xtables.lock, so pods never contend with each other.
    cmd.args(["--noflush", "-w", "10"])
        .env("XTABLES_LOCKFILE", lock);
    run_tool(cmd, payload.as_bytes(), TOOL_TIMEOUT).map_err(|e| {
        CniError::new(
            code::CAPTURE_APPLY,
            format!("run {}: {e}", t.restore.display()),
        )
    })
}

/// Every table (ours are nat, mangle and raw).
fn save(t: &Tools, ns: &NetNs) -> Result<String> {
    let cmd = ns.command(&t.save);
    let out = run_tool(cmd, b"", TOOL_TIMEOUT).map_err(|e| {
        CniError::new(
            code::CAPTURE_APPLY,
            format!("run {}: {e}", t.save.display()),
        )
    })?;
    if !out.ok() {
        return Err(CniError::new(
            code::CAPTURE_APPLY,
            format!("{} failed: {}", t.save.display(), out.failure()),
        ));
    }
    Ok(out.stdout)
}

fn lock_file(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("xtables.lock")
}

/// Apply the plan's families other than `applied` (which an earlier call
/// programmed). When a family fails, every family applied so far, those in
/// `applied` included, is removed again.
/// One atomic restore per family; the error says whether undoing worked
/// (`clean`: nothing of this call remains).
fn apply_rest(
    plan: &Plan,
    variant: Variant,
    ns: &NetNs,
    lock_dir: &Path,
    applied: &[Family],
) -> std::result::Result<(), super::ApplyError> {
    let lock = lock_file(lock_dir);
    let mut done: Vec<Family> = applied.to_vec();
    for fam in plan.families() {
        if applied.contains(&fam) {
            continue;
        }
        if let Err(error) = apply_family(plan, fam, variant, ns, &lock) {
            // One table is one atomic commit: with several, a failure may
            // leave the tables committed before it.
            if plan.tables().len() > 1 {
                done.push(fam);
            }
            let undone = remove_families(plan, &done, variant, ns, &lock);
            if let Err(e) = &undone {
                log::error!("undoing capture after a failed apply: {e}");
            }
            return Err(super::ApplyError {
                error,
                clean: undone.is_ok(),
            });
        }
        done.push(fam);
    }
    Ok(())
}

fn apply_family(plan: &Plan, fam: Family, variant: Variant, ns: &NetNs, lock: &Path) -> Result<()> {
    let t = tools(variant, fam)?;
    let out = restore(&t, ns, lock, &render_create(plan, fam))?;
    if out.ok() {
        return Ok(());
    }
    let saved = parse_save(&save(&t, ns)?);
    let out = restore(&t, ns, lock, &render_converge(plan, fam, &saved))?;
    if !out.ok() {
        return Err(CniError::new(
            code::CAPTURE_APPLY,
            format!("{} failed: {}", t.restore.display(), out.failure()),
        ));
    }
    Ok(())
}

/// Remove ours from `families`. iptables-nft's tables are nf_tables
/// tables: one netlink socket clears them all (see `nftnl::remove_xt`),
/// with the tools as the fallback; legacy takes the tools.
fn remove_families(
    plan: &Plan,
    families: &[Family],
    variant: Variant,
    ns: &NetNs,
    lock: &Path,
) -> Result<()> {
    if families.is_empty() {
        return Ok(());
    }
    if variant == Variant::Nft {
        let tables: Vec<&str> = plan.tables().into_iter().map(table_name).collect();
        match super::nftnl::remove_xt(ns, CHAIN_PREFIX, families, &tables) {
            Ok(()) => return Ok(()),
            Err(e) => log::info!("{e}; removing with the restore tool"),
        }
    }
    let mut first = None;
    for &fam in families {
        if let Err(e) = remove_family(plan, fam, variant, ns, lock) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

fn remove_family(
    plan: &Plan,
    fam: Family,
    variant: Variant,
    ns: &NetNs,
    lock: &Path,
) -> Result<()> {
    let t = tools(variant, fam)?;
    // The fast path fits the shape the plan programs; anything else (partly
    // removed, changed by hand) takes the save + cleanup path.
    let out = restore(&t, ns, lock, &render_delete(plan, fam))?;
    if out.ok() {
        return Ok(());
    }
    let saved = parse_save(&save(&t, ns)?);
    if let Some(payload) = render_cleanup(&saved) {
        let out = restore(&t, ns, lock, &payload)?;
        if !out.ok() {
            return Err(CniError::new(
                code::CAPTURE_APPLY,
                format!("{} failed: {}", t.restore.display(), out.failure()),
            ));
        }
    }
    Ok(())
}

/// Differences between the plan and what `iptables-save` shows, if any.
pub fn diff(plan: &Plan, fam: Family, saved: &Saved) -> Option<String> {
    let mut missing_chains: Vec<&str> = plan
        .chains()
        .into_iter()
        .filter(|c| !c.is_hook())
        .filter(|c| {
            !saved
                .table(c.table())
                .chains
                .iter()
                .any(|s| s == chain_name(*c))
        })
        .map(|c| chain_name(c))
        .collect();
    missing_chains.sort();
    if !missing_chains.is_empty() {
        return Some(format!("missing chains: {}", missing_chains.join(", ")));
    }
    for t in Table::ALL {
        if let Some(d) = diff_table(plan, fam, t, saved.table(t)) {
            return Some(format!("{} table: {d}", table_name(t)));
        }
    }
    None
}

fn diff_table(plan: &Plan, fam: Family, t: Table, saved: &SavedTable) -> Option<String> {
    let expected = rule_lines(plan, fam, t);
    let mut actual: Vec<String> = saved.jumps.clone();
    actual.extend(saved.own_rules.iter().cloned());
    let own = plan.own_chains(t);
    let extra_chains: Vec<&String> = saved
        .chains
        .iter()
        .filter(|c| !own.iter().any(|o| chain_name(*o) == c.as_str()))
        .collect();
    if !extra_chains.is_empty() {
        return Some(format!("unexpected chains {extra_chains:?}"));
    }
    // Compare as ordered lists per chain: the builtin-chain jumps may sit
    // among other rules, ours must be exactly the plan.
    let mut exp_sorted = expected.clone();
    exp_sorted.sort();
    let mut act_sorted = actual.clone();
    act_sorted.sort();
    if exp_sorted != act_sorted {
        let missing: Vec<_> = expected.iter().filter(|l| !actual.contains(l)).collect();
        let extra: Vec<_> = actual.iter().filter(|l| !expected.contains(l)).collect();
        return Some(format!(
            "missing rules {missing:?}; unexpected rules {extra:?}"
        ));
    }
    // Same rules: check the order within each of our chains (a listing
    // groups rules by chain, in its own order of chains).
    for c in own {
        let head = format!("-A {} ", chain_name(c));
        let exp: Vec<&String> = expected.iter().filter(|l| l.starts_with(&head)).collect();
        let act: Vec<&String> = saved
            .own_rules
            .iter()
            .filter(|l| l.starts_with(&head))
            .collect();
        if exp != act {
            return Some(format!("rules of {} are out of order", chain_name(c)));
        }
    }
    None
}

fn check(plan: &Plan, variant: Variant, ns: &NetNs) -> Result<()> {
    for fam in plan.families() {
        let t = tools(variant, fam)?;
        let saved = parse_save(&save(&t, ns)?);
        if let Some(d) = diff(plan, fam, &saved) {
            let f = if fam == Family::V4 {
                "iptables"
            } else {
                "ip6tables"
            };
            return Err(CniError::new(
                code::CAPTURE_DRIFT,
                format!("capture rules changed ({f}): {d}"),
            ));
        }
    }
    Ok(())
}

/// The iptables backend: `iptables-restore --noflush` per family with the
/// `variant`'s tools, under the per-pod lock in `lock_dir`.
pub struct Iptables<'a> {
    pub variant: Variant,
    pub lock_dir: &'a Path,
}

impl super::Driver for Iptables<'_> {
    fn render(&self, plan: &Plan) -> String {
        let mut s = String::new();
        for fam in plan.families() {
            s.push_str(match fam {
                Family::V4 => "# iptables-restore --noflush (IPv4)\n",
                Family::V6 => "# ip6tables-restore --noflush (IPv6)\n",
            });
            s.push_str(&render_converge(plan, fam, &Saved::default()));
        }
        s
    }

    fn apply(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), super::ApplyError> {
        apply_rest(plan, self.variant, ns, self.lock_dir, &[])
    }

    /// Only the ip6tables family; on failure the IPv4 family is removed
    /// again, so `clean` still means nothing remains.
    fn add_ipv6(&self, plan: &Plan, ns: &NetNs) -> std::result::Result<(), super::ApplyError> {
        apply_rest(plan, self.variant, ns, self.lock_dir, &[Family::V4])
    }

    fn remove(&self, plan: &Plan, ns: &NetNs) -> Result<()> {
        let lock = lock_file(self.lock_dir);
        remove_families(plan, &plan.families(), self.variant, ns, &lock)
    }

    fn check(&self, plan: &Plan, ns: &NetNs) -> Result<()> {
        check(plan, self.variant, ns)
    }

    /// Both families' rules of this variant: the jumps into our chains,
    /// our chains' rules per table, and a summary (ports, interfaces).
    fn describe(&self, ns: &NetNs) -> Result<Option<String>> {
        let mut out = String::new();
        for fam in [Family::V4, Family::V6] {
            let Ok(t) = tools(self.variant, fam) else {
                continue; // this variant is not installed
            };
            let saved = parse_save(&save(&t, ns)?);
            if saved.is_empty() {
                continue;
            }
            let (tool, fam) = match fam {
                Family::V4 => ("iptables", "IPv4"),
                Family::V6 => ("ip6tables", "IPv6"),
            };
            let _ = writeln!(
                out,
                "backend: iptables, {} variant ({tool}, {fam})",
                self.variant.name()
            );
            let lines = || {
                Table::ALL.into_iter().flat_map(|t| {
                    let st = saved.table(t);
                    st.jumps.iter().chain(st.own_rules.iter())
                })
            };
            out.push_str(&summary(lines()));
            for t in Table::ALL {
                let st = saved.table(t);
                if st.chains.is_empty() && st.jumps.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "  *{}", table_name(t));
                for l in st.jumps.iter().chain(st.own_rules.iter()) {
                    let _ = writeln!(out, "  {l}");
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }
}

/// The redirect ports and excluded interfaces in saved rule lines.
fn summary<'a>(lines: impl Iterator<Item = &'a String>) -> String {
    let mut redirects = Vec::new();
    let mut ifs = Vec::new();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        for (i, x) in w.iter().enumerate() {
            if *x == "--to-ports" || *x == "--on-port" {
                if let Some(p) = w.get(i + 1) {
                    let dir = if l.starts_with("-A MULTIMESH_IN_REDIRECT") {
                        "inbound"
                    } else if l.starts_with("-A MULTIMESH_TPROXY") {
                        "inbound (TPROXY)"
                    } else if l.starts_with("-A MULTIMESH_DNS") {
                        "dns"
                    } else {
                        "outbound"
                    };
                    let r = format!("{dir} -> {p}");
                    if !redirects.contains(&r) {
                        redirects.push(r);
                    }
                }
            }
            if (*x == "-i" || *x == "-o") && w.get(i + 1) != Some(&"lo") {
                if let Some(n) = w.get(i + 1) {
                    if !ifs.contains(n) {
                        ifs.push(*n);
                    }
                }
            }
        }
    }
    format!(
        "  ports: {}\n  excluded interfaces: {}\n",
        redirects.join(", "),
        if ifs.is_empty() {
            "none".to_string()
        } else {
            ifs.join(" ")
        }
    )
}

/// Count rules a save command shows in the current (host) netns.
fn count_rules(tool: &str) -> Option<usize> {
    let path = find_tool(tool)?;
    let out = run_tool(std::process::Command::new(path), b"", TOOL_TIMEOUT).ok()?;
    if !out.ok() {
        return None;
    }
    Some(out.stdout.lines().filter(|l| l.starts_with("-A ")).count())
}

/// Resolve `Auto` to the variant the node uses: the one whose tables hold
/// more rules (as kube-proxy's iptables-wrapper decides), ties going to the
/// variant `iptables` itself is. Cached in `cniDir/iptables-variant`.
pub fn resolve_variant(v: Variant, state_dir: &Path) -> Result<Variant> {
    if v != Variant::Auto {
        return Ok(v);
    }
    // state_dir is cniDir/<container>; the cache lives in cniDir.
    let cache = state_dir
        .parent()
        .unwrap_or(state_dir)
        .join("iptables-variant");
    if let Ok(s) = std::fs::read_to_string(&cache) {
        match s.trim() {
            "legacy" => return Ok(Variant::Legacy),
            "nft" => return Ok(Variant::Nft),
            _ => {}
        }
    }
    let legacy = count_rules("iptables-legacy-save");
    let nft = count_rules("iptables-nft-save");
    let detected = match (legacy, nft) {
        (Some(l), Some(n)) if l > n => Variant::Legacy,
        (Some(l), Some(n)) if n > l => Variant::Nft,
        (Some(_), None) => Variant::Legacy,
        (None, Some(_)) => Variant::Nft,
        (None, None) => {
            return Err(CniError::new(
                code::CAPTURE_APPLY,
                "no iptables found (neither iptables-legacy-save nor iptables-nft-save)",
            ))
        }
        _ => {
            let default_is_legacy = find_tool("iptables")
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p.to_string_lossy().contains("legacy"));
            if default_is_legacy {
                Variant::Legacy
            } else {
                Variant::Nft
            }
        }
    };
    let _ = crate::state::write_atomic(&cache, detected.name().as_bytes());
    Ok(detected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::CaptureConfig;

    fn plan() -> Plan {
        Plan::new(
            &CaptureConfig::defaults(crate::capture::Profile::Istio),
            false,
        )
    }

    #[test]
    fn save_output_round_trips_through_diff() {
        let p = plan();
        let mut save = String::from("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j MULTIMESH_FAKE\nCOMMIT\n*nat\n:PREROUTING ACCEPT [3:180]\n:OUTPUT ACCEPT [0:0]\n");
        for c in p.own_chains(Table::Nat) {
            save.push_str(&format!(":{} - [0:0]\n", chain_name(c)));
        }
        save.push_str("-A OUTPUT -p udp -m udp --dport 53 -j RETURN\n");
        for l in rule_lines(&p, Family::V4, Table::Nat) {
            save.push_str(&l);
            save.push('\n');
        }
        save.push_str("COMMIT\n");
        let saved = parse_save(&save);
        assert_eq!(saved.nat.chains.len(), 4);
        assert_eq!(saved.nat.jumps.len(), 2, "filter-table rules are not ours");
        assert!(saved.mangle.chains.is_empty() && saved.raw.chains.is_empty());
        assert_eq!(diff(&p, Family::V4, &saved), None);
        // A duplicated jump, a missing rule and a reordering are all drift.
        let mut dup = parse_save(&save);
        dup.nat.jumps.push(dup.nat.jumps[0].clone());
        assert!(diff(&p, Family::V4, &dup).is_some());
        let mut missing = parse_save(&save);
        missing.nat.own_rules.pop();
        assert!(diff(&p, Family::V4, &missing)
            .unwrap()
            .contains("missing rules"));
        let mut swapped = parse_save(&save);
        swapped.nat.own_rules.swap(0, 1);
        assert!(diff(&p, Family::V4, &swapped).unwrap().contains("order"));
        let mut nochain = parse_save(&save);
        nochain.nat.chains.pop();
        assert!(diff(&p, Family::V4, &nochain)
            .unwrap()
            .contains("missing chains"));
    }

    #[test]
    fn converge_deletes_stale_jumps_and_cleanup_removes_only_ours() {
        let saved = parse_save(
            "*nat\n:MULTIMESH_OUTPUT - [0:0]\n-A OUTPUT -p tcp -j MULTIMESH_OUTPUT\n-A OUTPUT -p tcp -j MULTIMESH_OUTPUT\n-A OUTPUT -j OTHER\nCOMMIT\n",
        );
        let c = render_converge(&plan(), Family::V4, &saved);
        assert_eq!(c.matches("-D OUTPUT -p tcp -j MULTIMESH_OUTPUT").count(), 2);
        assert_eq!(c.matches("-A OUTPUT -p tcp -j MULTIMESH_OUTPUT").count(), 1);
        let d = render_cleanup(&saved).unwrap();
        assert!(d.contains("-X MULTIMESH_OUTPUT"));
        assert!(!d.contains("OTHER"));
        assert_eq!(
            render_cleanup(&parse_save("*nat\n-A OUTPUT -j OTHER\nCOMMIT\n")),
            None
        );
    }

    /// Every mode at once: one save of all tables reads back as no drift;
    /// a mangle or raw rule gone is drift naming its table; cleanup and
    /// the delete payload cover every table.
    #[test]
    fn every_table_is_saved_diffed_and_removed() {
        let mut cfg = CaptureConfig::defaults(crate::capture::Profile::Istio);
        cfg.interception = crate::capture::Interception::Tproxy;
        cfg.dns_capture = true;
        cfg.drop_invalid = true;
        cfg.reroute_interfaces = vec!["net1".into()];
        let p = Plan::new(&cfg, true);
        assert_eq!(p.tables(), Table::ALL);
        for fam in [Family::V4, Family::V6] {
            let mut save = String::new();
            for t in Table::ALL {
                save.push_str(&format!("*{}\n:PREROUTING ACCEPT [0:0]\n", table_name(t)));
                for c in p.own_chains(t) {
                    save.push_str(&format!(":{} - [0:0]\n", chain_name(c)));
                }
                for l in rule_lines(&p, fam, t) {
                    save.push_str(&l);
                    save.push('\n');
                }
                save.push_str("COMMIT\n");
            }
            let saved = parse_save(&save);
            assert_eq!(diff(&p, fam, &saved), None);
            for (t, want) in [(Table::Mangle, "mangle table"), (Table::Raw, "raw table")] {
                let mut less = parse_save(&save);
                match t {
                    Table::Mangle => less.mangle.own_rules.pop(),
                    _ => less.raw.own_rules.pop(),
                };
                assert!(diff(&p, fam, &less).unwrap().contains(want));
            }
            let cleanup = render_cleanup(&saved).unwrap();
            let delete = render_delete(&p, fam);
            for t in Table::ALL {
                assert!(cleanup.contains(&format!("*{}\n", table_name(t))));
                assert!(delete.contains(&format!("*{}\n", table_name(t))));
            }
            assert!(
                delete.contains("-X MULTIMESH_TPROXY")
                    && delete.contains("-X MULTIMESH_DNS_ZONE_OUT")
            );
            // A plan without the modes converges the extra chains away.
            let plain = Plan::new(
                &CaptureConfig::defaults(crate::capture::Profile::Istio),
                true,
            );
            let conv = render_converge(&plain, fam, &saved);
            assert!(conv.contains("-X MULTIMESH_MANGLE_IN") && conv.contains("-X MULTIMESH_DNS"));
        }
    }

    #[test]
    fn only_tcp_is_ever_matched() {
        let mut cfg = CaptureConfig::defaults(crate::capture::Profile::Istio);
        cfg.exclude_interfaces = vec!["net1".into()];
        for fam in [Family::V4, Family::V6] {
            let lines = rule_lines(&Plan::new(&cfg, true), fam, Table::Nat);
            assert!(lines
                .iter()
                .all(|l| !l.contains("udp") && !l.contains("sctp") && !l.contains("icmp")));
            assert!(lines
                .iter()
                .filter(|l| l.contains("-j REDIRECT"))
                .all(|l| l.contains("-p tcp")));
            // Built-in chains are only entered for TCP.
            assert!(lines
                .iter()
                .filter(|l| l.starts_with("-A PREROUTING") || l.starts_with("-A OUTPUT"))
                .all(|l| l.contains("-p tcp")));
        }
    }
}
