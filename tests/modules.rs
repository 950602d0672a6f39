//! The module graph has no cycle: for every module under src/, the modules
//! it names through `crate::…` or `super::…` paths (outside its tests) are
//! its dependencies, and no dependency chain leads back to where it began.
//! A parent's own `mod` declarations and re-exports are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            let mut pre = prefix.to_vec();
            pre.push(stem);
            modules(&p, &pre, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let mut parts = prefix.to_vec();
            if stem != "mod" {
                parts.push(stem);
            }
            if parts.is_empty() || parts == ["lib"] || parts == ["main"] {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_string();
            out.insert(parts.join("::"), code);
        }
    }
}

/// Identifier paths following `start` in `code` (`crate::a::b` → "a::b").
fn paths_after<'a>(code: &'a str, start: &str) -> Vec<&'a str> {
    code.match_indices(start)
        .map(|(i, _)| {
            let rest = &code[i + start.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches(':')
        })
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut mods = BTreeMap::new();
    modules(Path::new("src"), &[], &mut mods);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    // The longest module named by a path, if any.
    let module_of = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|k| parts[..k].join("::"))
            .find(|c| names.contains(c))
    };
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, code) in &mods {
        let parent = m.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut deps = BTreeSet::new();
        for p in paths_after(code, "crate::") {
            deps.extend(module_of(p));
        }
        for p in paths_after(code, "super::") {
            let full = match &parent {
                Some(par) => format!("{par}::{p}"),
                None => p.to_string(),
            };
            deps.extend(module_of(&full).or_else(|| parent.clone()));
        }
        // A module and its own submodules are one unit here.
        deps.retain(|d| d != m && !d.starts_with(&format!("{m}::")));
        g.insert(m.clone(), deps);
    }
    g
}

/// Is `to` reachable from `from`? Returns the path if so.
fn path(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(p) = stack.pop() {
        let last = p.last().unwrap().clone();
        if last == to && p.len() > 1 {
            return Some(p);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for d in g.get(&last).into_iter().flatten() {
            let mut q = p.clone();
            q.push(d.clone());
            stack.push(q);
        }
    }
    None
}

#[test]
fn module_graph_has_no_cycle() {
    let g = graph();
    assert!(g.len() > 20, "found only {} modules", g.len());
    // The scanner sees real edges (so an empty graph cannot pass).
    assert!(g["attach"].contains("delegate"), "{:?}", g["attach"]);
    assert!(g["capture::nftnl"].contains("capture::nft"));
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| path(&g, m, m))
        .map(|p| p.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}
