//! Find pods' network namespaces by their IPs: among the bind mounts in
//! the netns directories (`--netns-dir`) and the network namespaces of the
//! node's processes (`/proc/<pid>/ns/net`), each namespace looked at once
//! (deduplicated by its nsfs device and inode, bind mounts first so a
//! stable path is kept), its addresses read over netlink. Everything here
//! is bounded: directory entries, processes, namespaces.

use crate::netns::NetNs;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Most entries read from one netns directory.
pub const MAX_DIR_ENTRIES: usize = 4096;
/// Most processes looked at.
pub const MAX_PROCESSES: usize = 65536;
/// Most distinct network namespaces whose addresses are read.
pub const MAX_NAMESPACES: usize = 4096;

/// A network namespace holding some of the wanted IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// A path that reaches it (a bind mount, or /proc/PID/ns/net).
    pub path: PathBuf,
    /// `NetNs::key`.
    pub key: String,
}

/// The namespaces (other than the agent's own) that hold any of `wanted`,
/// by IP. An IP found in more than one namespace maps to all of them (the
/// caller refuses to choose).
pub fn by_ips(
    netns_dirs: &[PathBuf],
    proc_dir: &Path,
    wanted: &HashSet<IpAddr>,
) -> HashMap<IpAddr, Vec<Found>> {
    let mut out: HashMap<IpAddr, Vec<Found>> = HashMap::new();
    if wanted.is_empty() {
        return out;
    }
    let own = NetNs::open(&proc_dir.join("self/ns/net"))
        .ok()
        .flatten()
        .and_then(|n| n.key().ok());
    let mut seen: HashSet<String> = own.into_iter().collect();
    for path in candidates(netns_dirs, proc_dir) {
        if seen.len() > MAX_NAMESPACES {
            log::error!("agent: more than {MAX_NAMESPACES} network namespaces on this node; the rest are not searched");
            break;
        }
        // Not a netns (a stray file), gone meanwhile, or not ours to open.
        let Ok(Some(ns)) = NetNs::open(&path) else {
            continue;
        };
        let Ok(key) = ns.key() else {
            continue;
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        let Ok(ifaces) = crate::netlink::interfaces(&ns) else {
            continue;
        };
        let mut hit: HashSet<IpAddr> = HashSet::new();
        for a in ifaces.iter().flat_map(|i| i.addresses.iter()) {
            let ip = a.split('/').next().and_then(|s| s.parse::<IpAddr>().ok());
            if let Some(ip) = ip.filter(|ip| wanted.contains(ip)) {
                hit.insert(ip);
            }
        }
        for ip in hit {
            out.entry(ip).or_default().push(Found {
                path: path.clone(),
                key: key.clone(),
            });
        }
    }
    out
}

/// Paths to look at: the netns directories' entries, then every
/// process's network namespace.
fn candidates(netns_dirs: &[PathBuf], proc_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in netns_dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .flatten()
            .take(MAX_DIR_ENTRIES)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .collect();
        names.sort();
        out.extend(names);
    }
    if let Ok(rd) = std::fs::read_dir(proc_dir) {
        out.extend(
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .take(MAX_PROCESSES)
                .map(|e| e.path().join("ns/net")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_bounded_and_strays_skipped() {
        let root = std::env::temp_dir().join(format!("mm-locate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (dir, proc_dir) = (root.join("netns"), root.join("proc"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..MAX_DIR_ENTRIES + 10 {
            std::fs::write(dir.join(format!("ns{i}")), "").unwrap();
        }
        std::fs::create_dir_all(dir.join("subdir")).unwrap();
        for p in ["1", "42", "self", "x1"] {
            std::fs::create_dir_all(proc_dir.join(p).join("ns")).unwrap();
        }
        let c = candidates(std::slice::from_ref(&dir), &proc_dir);
        let from_dir = c.iter().filter(|p| p.starts_with(&dir)).count();
        assert!(from_dir <= MAX_DIR_ENTRIES, "{from_dir}");
        assert!(from_dir >= MAX_DIR_ENTRIES - 1, "{from_dir}"); // the subdir may be among the first
        let procs: Vec<&PathBuf> = c.iter().filter(|p| p.starts_with(&proc_dir)).collect();
        assert_eq!(procs.len(), 2, "{procs:?}"); // numeric entries only
                                                 // None of them is a network namespace: nothing found, no error.
        let wanted: HashSet<IpAddr> = ["198.51.100.2".parse().unwrap()].into();
        assert!(by_ips(&[dir], &proc_dir, &wanted).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
