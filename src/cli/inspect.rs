//! `multimesh inspect`: what multimesh programmed in a pod netns.

use crate::capture;
use crate::flags::Flags;
use crate::netns::NetNs;
use std::path::Path;

const INSPECT_HELP: &str = "\
Usage: multimesh inspect --netns PATH
Show what multimesh programmed in a pod network namespace: interfaces,
backend, ports and rules (every table), and TPROXY's policy routing.
";

pub fn main(args: &[&str]) -> Result<String, String> {
    let Some(f) = Flags::parse(args, &["netns"], &[]).map_err(|e| format!("inspect: {e}"))? else {
        return Ok(INSPECT_HELP.to_string());
    };
    let path = f
        .value("netns")
        .ok_or("inspect: --netns PATH is required")?;
    let ns = NetNs::open(Path::new(path))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{path}: no such network namespace"))?;
    let mut out = format!("netns: {path}\n");
    let ifaces = crate::netlink::interfaces(&ns).map_err(|e| e.to_string())?;
    let names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
    out.push_str(&format!("interfaces: {}\n", names.join(" ")));
    for i in &ifaces {
        out.push_str(&format!(
            "  {:<16} {:<4} {}\n",
            i.name,
            if i.up { "UP" } else { "DOWN" },
            i.addresses.join(" ")
        ));
    }
    // No lock is taken: describing only reads.
    let mut found = false;
    for d in capture::all_drivers(Path::new("")) {
        match d.describe(&ns) {
            Ok(Some(text)) => {
                found = true;
                out.push_str(&text);
            }
            Ok(None) => {}
            Err(e) => out.push_str(&format!("(could not read: {e})\n")),
        }
    }
    match capture::route::describe(&ns) {
        Ok(Some(text)) => {
            found = true;
            out.push_str(&text);
        }
        Ok(None) => {}
        Err(e) => out.push_str(&format!("(could not read the routing: {e})\n")),
    }
    if !found {
        out.push_str("capture: none (no multimesh rules in this netns)\n");
    }
    Ok(escape_controls(&out))
}

/// What `inspect` prints comes from the pod (interface names, addresses,
/// rule text): control characters other than newlines are shown escaped,
/// so a crafted interface name cannot write escape sequences to a terminal.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
