//! mm-recorder: a tiny CNI plugin for tests and the demo.
//!
//! It records every call as one JSON line in `recordFile`, keeps a marker
//! file per attachment in `leakDir` while attached (so tests can see leaks),
//! and fails on demand. It touches no network namespace.
//!
//! Config fields (all optional):
//!   recordFile: path   append {"command","ifname","containerID","netns","args","path","config"}
//!   leakDir:    path   ADD creates <leakDir>/<containerID>-<ifname>, DEL removes it
//!   failOn:     "ADD" | ["ADD","DEL",...]   fail these commands
//!   failCode:   number (default 11)
//!   crash:      true   fail without CNI error JSON (exit 3)
//!   sleepMs:    number sleep before answering
//!   sleepOn:    "ADD" | ["ADD",...]   sleep only for these commands (default: all)
//!   address:    CIDR reported in the result (default 203.0.113.9/24)

use serde_json::{json, Value};
use std::io::{Read, Write};

fn main() {
    let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut input = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut input);
    let conf: Value = serde_json::from_slice(&input).unwrap_or(Value::Null);
    let version = conf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let (cid, ifname, netns) = (env("CNI_CONTAINERID"), env("CNI_IFNAME"), env("CNI_NETNS"));
    if cmd == "VERSION" {
        println!(
            "{}",
            json!({"cniVersion": version, "supportedVersions": ["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
        return;
    }
    if let Some(f) = conf.get("recordFile").and_then(Value::as_str) {
        let line = json!({"command": cmd, "ifname": ifname, "containerID": cid, "netns": netns,
            "args": env("CNI_ARGS"), "path": env("CNI_PATH"), "config": conf});
        if let Ok(mut fh) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            // One write per line so concurrent plugins never interleave.
            let _ = fh.write_all(format!("{line}\n").as_bytes());
        }
    }
    let commands = |key: &str| -> Option<Vec<String>> {
        match conf.get(key) {
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
            ),
            _ => None,
        }
    };
    if let Some(ms) = conf.get("sleepMs").and_then(Value::as_u64) {
        if commands("sleepOn").is_none_or(|c| c.contains(&cmd)) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    if commands("failOn").unwrap_or_default().contains(&cmd) {
        if conf.get("crash").and_then(Value::as_bool) == Some(true) {
            eprintln!("mm-recorder: crashing on {cmd} as configured");
            std::process::exit(3);
        }
        let code = conf.get("failCode").and_then(Value::as_u64).unwrap_or(11);
        println!(
            "{}",
            json!({"cniVersion": version, "code": code, "msg": format!("mm-recorder: {cmd} failed as configured")})
        );
        std::process::exit(1);
    }
    let marker = conf
        .get("leakDir")
        .and_then(Value::as_str)
        .map(|d| std::path::Path::new(d).join(format!("{cid}-{ifname}")));
    match cmd.as_str() {
        "ADD" => {
            if let Some(m) = &marker {
                let _ = std::fs::write(m, b"attached\n");
            }
            if let Some(prev) = conf.get("prevResult") {
                println!("{prev}");
                return;
            }
            let addr = conf
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or("203.0.113.9/24");
            let mut ip = json!({"address": addr, "interface": 0});
            if !version.starts_with('1') {
                ip["version"] = json!(if addr.contains(':') { "6" } else { "4" });
            }
            // The recorder creates no interface: it reports one in the
            // sandbox only when the netns really has it (as a real plugin's
            // result would), so multimesh's CHECK finds what it is told.
            let in_sandbox = !netns.is_empty()
                && multimesh::netns::NetNs::open(std::path::Path::new(&netns))
                    .ok()
                    .flatten()
                    .and_then(|ns| multimesh::netlink::link_names(&ns).ok())
                    .is_some_and(|names| names.contains(&ifname));
            let sandbox = if in_sandbox { netns.as_str() } else { "" };
            println!(
                "{}",
                json!({"cniVersion": version, "interfaces": [{"name": ifname, "sandbox": sandbox}],
                       "ips": [ip], "dns": {}})
            );
        }
        "DEL" => {
            if let Some(m) = &marker {
                let _ = std::fs::remove_file(m);
            }
        }
        _ => {}
    }
}
