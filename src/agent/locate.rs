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

/// How much one search looks at; `Default` is the `MAX_*` bounds above
/// (what the agent uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries read from each netns directory.
    pub dir_entries: usize,
    /// `/proc` entries (processes) looked at.
    pub processes: usize,
    /// Distinct namespaces (the agent's own not counted) whose addresses
    /// are read.
    pub namespaces: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            dir_entries: MAX_DIR_ENTRIES,
            processes: MAX_PROCESSES,
            namespaces: MAX_NAMESPACES,
        }
    }
}

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
/// caller refuses to choose). Past `limits`, the rest is not searched
/// (logged).
pub fn by_ips(
    netns_dirs: &[PathBuf],
    proc_dir: &Path,
    wanted: &HashSet<IpAddr>,
    limits: &Limits,
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
    let mut searched = 0;
    for path in candidates(netns_dirs, proc_dir, limits) {
        // Not a netns (a stray file), gone meanwhile, or not ours to open.
        let Ok(Some(ns)) = NetNs::open(&path) else {
            continue;
        };
        let Ok(key) = ns.key() else {
            continue;
        };
        if seen.contains(&key) {
            continue;
        }
        if searched >= limits.namespaces {
            log::error!(
                "agent: more than {} network namespaces on this node; the rest are not searched",
                limits.namespaces
            );
            break;
        }
        seen.insert(key.clone());
        searched += 1;
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
/// process's network namespace (`limits.dir_entries` of each directory,
/// `limits.processes` processes).
fn candidates(netns_dirs: &[PathBuf], proc_dir: &Path, limits: &Limits) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in netns_dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .flatten()
            .take(limits.dir_entries)
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
                .take(limits.processes)
                .map(|e| e.path().join("ns/net")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(cmd: &str) -> bool {
        Command::new("sh")
            .args(["-c", cmd])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(t: &str) -> Scratch {
            let root = std::env::temp_dir().join(format!("mm-locate-{t}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            Scratch(root)
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn default_limits_are_the_documented_bounds() {
        let l = Limits::default();
        assert_eq!(
            (l.dir_entries, l.processes, l.namespaces),
            (4096, 65_536, 4096)
        );
        assert_eq!(
            (MAX_DIR_ENTRIES, MAX_PROCESSES, MAX_NAMESPACES),
            (4096, 65_536, 4096)
        );
    }

    /// Directory entries and processes past the limits are not looked at;
    /// stray files, subdirectories and non-numeric /proc entries are
    /// skipped without an error.
    #[test]
    fn entries_and_processes_are_bounded_and_strays_skipped() {
        let s = Scratch::new("entries");
        let (dir, proc_dir) = (s.0.join("netns"), s.0.join("proc"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..25 {
            std::fs::write(dir.join(format!("ns{i}")), "").unwrap();
        }
        std::fs::create_dir_all(dir.join("subdir")).unwrap();
        for p in ["1", "42", "43", "44", "self", "x1"] {
            std::fs::create_dir_all(proc_dir.join(p).join("ns")).unwrap();
        }
        let limits = Limits {
            dir_entries: 10,
            processes: 3,
            namespaces: 5,
        };
        let c = candidates(std::slice::from_ref(&dir), &proc_dir, &limits);
        let from_dir = c.iter().filter(|p| p.starts_with(&dir)).count();
        // 10 entries read; the subdir may be one of them.
        assert!((9..=10).contains(&from_dir), "{from_dir}");
        let procs = c.iter().filter(|p| p.starts_with(&proc_dir)).count();
        assert_eq!(procs, 3, "{c:?}"); // numeric entries only, 3 of 4
                                       // Within the defaults: every file, every process.
        let c = candidates(std::slice::from_ref(&dir), &proc_dir, &Limits::default());
        assert_eq!(c.iter().filter(|p| p.starts_with(&dir)).count(), 25);
        assert_eq!(c.iter().filter(|p| p.starts_with(&proc_dir)).count(), 4);
        // None of them is a network namespace: nothing found, no error.
        let wanted: HashSet<IpAddr> = ["198.51.100.2".parse().unwrap()].into();
        assert!(by_ips(&[dir], &proc_dir, &wanted, &limits).is_empty());
    }

    /// Real network namespaces (bind mounts in a netns directory, and one
    /// reached only through a process entry): past `namespaces` the rest
    /// are not searched; a namespace reached twice counts once.
    #[test]
    fn namespaces_searched_are_bounded() {
        let s = Scratch::new("ns");
        let (dir, proc_dir) = (s.0.join("netns"), s.0.join("proc"));
        std::fs::create_dir_all(&dir).unwrap();
        let tag = format!("mmloc{}", std::process::id());
        struct Cleanup(Vec<String>, Vec<PathBuf>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for m in &self.1 {
                    let _ = Command::new("umount").arg(m).status();
                }
                for n in &self.0 {
                    let _ = Command::new("ip").args(["netns", "del", n]).status();
                }
            }
        }
        let mut clean = Cleanup(Vec::new(), Vec::new());
        let mut ips = Vec::new();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let ns = format!("{tag}{name}");
            assert!(sh(&format!("ip netns add {ns}")), "ip netns add {ns}");
            clean.0.push(ns.clone());
            let ip = format!("198.51.100.{}", 61 + i);
            assert!(sh(&format!(
                "ip -n {ns} link set lo up && ip -n {ns} addr add {ip}/32 dev lo"
            )));
            ips.push(ip.parse::<IpAddr>().unwrap());
            if *name == "c" {
                // Reached through a process entry only.
                std::fs::create_dir_all(proc_dir.join("7/ns")).unwrap();
                std::os::unix::fs::symlink(format!("/run/netns/{ns}"), proc_dir.join("7/ns/net"))
                    .unwrap();
                continue;
            }
            let target = dir.join(name);
            std::fs::write(&target, "").unwrap();
            assert!(sh(&format!(
                "mount --bind /run/netns/{ns} {}",
                target.display()
            )));
            clean.1.push(target);
        }
        // "a" twice: a second bind mount of the same namespace.
        let twice = dir.join("a2");
        std::fs::write(&twice, "").unwrap();
        assert!(sh(&format!(
            "mount --bind /run/netns/{tag}a {}",
            twice.display()
        )));
        clean.1.push(twice);
        let wanted: HashSet<IpAddr> = ips.iter().copied().collect();
        let dirs = [dir.clone()];
        let all = by_ips(&dirs, &proc_dir, &wanted, &Limits::default());
        assert_eq!(all.len(), 3, "{all:?}");
        assert_eq!(all[&ips[0]].len(), 1, "a once: {all:?}");
        assert_eq!(all[&ips[0]][0].path, dir.join("a")); // the first path kept
        assert_eq!(all[&ips[2]][0].path, proc_dir.join("7/ns/net"));
        // Two namespaces: a and b (a2 is a again, not counted); c is not
        // searched.
        let limits = Limits {
            namespaces: 2,
            ..Limits::default()
        };
        let two = by_ips(&dirs, &proc_dir, &wanted, &limits);
        let mut got: Vec<IpAddr> = two.keys().copied().collect();
        got.sort();
        assert_eq!(got, ips[..2], "{two:?}");
        // None searched.
        let none = Limits {
            namespaces: 0,
            ..Limits::default()
        };
        assert!(by_ips(&dirs, &proc_dir, &wanted, &none).is_empty());
    }
}
