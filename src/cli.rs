//! The command line for people: `--version`, `--help`, `rules`, `inspect`,
//! `install` (in [`crate::install`]).

use crate::capture::{self, iptables, nft, Backend, Family, Plan, Variant};
use crate::config::NetConf;
use crate::netns::{run_tool, NetNs};
use std::io::Read;
use std::path::Path;

const HELP: &str = "\
multimesh - CNI meta-plugin with service-mesh TCP capture on every pod interface

Usage:
  multimesh --version
  multimesh --help
  multimesh rules --config FILE [--ipv6] [--backend iptables|nftables]
                 [--pod POD.json|yaml | --annotations FILE]
      Print the capture rules multimesh would program for a network config
      (FILE or - for stdin), without touching the system. --pod applies a
      pod's mesh annotations and decides, as Kubernetes mode does, whether
      it is captured at all; --annotations applies an annotation map (JSON
      or YAML) as if the pod were meshed.
  multimesh inspect --netns PATH
      Show what multimesh programmed in a pod network namespace.
  multimesh install [--bin-dir DIR] [--cni-conf-dir DIR] [--api-server URL]
                    [--capture-backend B] [--capture-profile P] [--watch SECONDS]
                    [--uninstall] ...
      Install on this node (DaemonSet init container): copy the binary to
      /opt/cni/bin, write a kubeconfig and /etc/cni/net.d/00-multimesh.conflist
      wrapping the primary network config. All options: multimesh install --help

As a CNI plugin it is run by the container runtime with CNI_COMMAND set;
see README.md and docs/ for the configuration.
";

pub fn main(args: Vec<String>) -> i32 {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.first().copied() {
        Some("--version" | "-V" | "version") => {
            println!(
                "multimesh {} (CNI {})",
                env!("CARGO_PKG_VERSION"),
                crate::cni::SUPPORTED_VERSIONS.join(", ")
            );
            0
        }
        Some("--help" | "-h" | "help") | None => {
            print!("{HELP}");
            if a.is_empty() {
                2
            } else {
                0
            }
        }
        Some("rules") => report(rules(&a[1..])),
        Some("inspect") => report(inspect(&a[1..])),
        Some("install") => crate::install::main(&a[1..]),
        Some("agent") => crate::agent::main(&a[1..]),
        Some(other) => {
            eprintln!("multimesh: unknown command {other:?}\n\n{HELP}");
            2
        }
    }
}

fn report(r: Result<String, String>) -> i32 {
    match r {
        Ok(s) => {
            print!("{s}");
            0
        }
        Err(e) => {
            eprintln!("multimesh: {e}");
            1
        }
    }
}

const RULES_HELP: &str = "\
Usage: multimesh rules --config FILE [--ipv6] [--backend iptables|nftables]
                      [--pod POD.json|yaml | --annotations FILE]
Print the capture rules multimesh would program for a network config (FILE,
or - for stdin), without touching the system. --pod applies a pod's mesh
annotations and decides, as Kubernetes mode does, whether it is captured at
all; --annotations applies an annotation map (JSON or YAML) as if the pod
were meshed.
";

const INSPECT_HELP: &str = "\
Usage: multimesh inspect --netns PATH
Show what multimesh programmed in a pod network namespace: interfaces,
backend, ports and rules.
";

/// A subcommand's flags, parsed strictly (lexopt): an unknown flag, a stray
/// argument, a missing or repeated value is an error. None: `--help`.
struct Flags {
    values: Vec<(&'static str, String)>,
    switches: Vec<&'static str>,
}

impl Flags {
    fn parse(
        args: &[&str],
        with_value: &[&'static str],
        switches: &[&'static str],
    ) -> Result<Option<Flags>, String> {
        use lexopt::Arg;
        let mut p = lexopt::Parser::from_args(args.iter().copied());
        let mut f = Flags {
            values: Vec::new(),
            switches: Vec::new(),
        };
        while let Some(arg) = p.next().map_err(|e| e.to_string())? {
            match arg {
                Arg::Long("help") | Arg::Short('h') => return Ok(None),
                Arg::Long(n) => {
                    if let Some(&name) = with_value.iter().find(|x| **x == n) {
                        let v = p
                            .value()
                            .map_err(|e| e.to_string())?
                            .into_string()
                            .map_err(|v| format!("--{name}: {v:?} is not UTF-8"))?;
                        if f.value(name).is_some() {
                            return Err(format!("--{name} given twice"));
                        }
                        f.values.push((name, v));
                    } else if let Some(&name) = switches.iter().find(|x| **x == n) {
                        f.switches.push(name);
                    } else {
                        return Err(format!("unknown option --{n}"));
                    }
                }
                other => return Err(other.unexpected().to_string()),
            }
        }
        Ok(Some(f))
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.contains(&name)
    }
}

fn rules(args: &[&str]) -> Result<String, String> {
    let Some(f) = Flags::parse(
        args,
        &["config", "backend", "pod", "annotations"],
        &["ipv6"],
    )
    .map_err(|e| format!("rules: {e}"))?
    else {
        return Ok(RULES_HELP.to_string());
    };
    let file = f
        .value("config")
        .ok_or("rules: --config FILE is required")?;
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("read stdin: {e}"))?;
    } else {
        bytes = std::fs::read(file).map_err(|e| format!("read {file}: {e}"))?;
    }
    let conf = NetConf::parse(&bytes).map_err(|e| e.to_string())?;
    let mut cfg = conf.capture.clone();
    match f.value("backend") {
        Some("iptables") => cfg.backend = Backend::Iptables,
        Some("nftables") => cfg.backend = Backend::Nftables,
        Some(b) => return Err(format!("unknown backend {b:?}")),
        None => {}
    }
    let ipv6 = f.switch("ipv6");
    let read_doc = |f: &str| -> Result<serde_json::Value, String> {
        let t = std::fs::read_to_string(f).map_err(|e| format!("read {f}: {e}"))?;
        crate::k8s::yaml_to_json(&t).map_err(|e| format!("{f}: {e}"))
    };
    let pod = match (f.value("pod"), f.value("annotations")) {
        (Some(_), Some(_)) => return Err("rules: give --pod or --annotations, not both".into()),
        (Some(f), None) => Some(read_doc(f)?),
        (None, Some(f)) => {
            let ann = read_doc(f)?;
            if !ann.is_object() {
                return Err(format!("{f}: annotations must be a map"));
            }
            let (proxy, status) = match cfg.profile {
                capture::Profile::Istio => ("istio-proxy", "sidecar.istio.io/status"),
                capture::Profile::Linkerd => ("linkerd-proxy", "linkerd.io/proxy-version"),
            };
            let mut ann = ann;
            if let Some(m) = ann.as_object_mut() {
                m.entry(status).or_insert_with(|| "{}".into());
            }
            Some(
                serde_json::json!({"metadata": {"namespace": "default", "annotations": ann},
                "spec": {"containers": [{"name": proxy}]}}),
            )
        }
        (None, None) => None,
    };
    if let Some(pod) = pod {
        return match crate::k8s::pod::capture_for_pod(&cfg, &pod) {
            Err(e) => Err(e.to_string()),
            Ok(None) => Ok(format!(
                "# pod not captured (profile {}, not meshed, capture disabled or namespace excluded): no rules\n",
                cfg.profile.name()
            )),
            Ok(Some(c)) => Ok(render(&c, ipv6)),
        };
    }
    Ok(render(&cfg, ipv6))
}

/// The rules for a capture config, as the chosen backend would apply them.
pub fn render(cfg: &capture::CaptureConfig, ipv6: bool) -> String {
    if !cfg.enabled {
        return "# capture disabled: no rules\n".into();
    }
    let plan = Plan::new(cfg, ipv6);
    match cfg.backend {
        Backend::Nftables => nft::render_table(&plan),
        Backend::Iptables => {
            let mut s = String::new();
            for fam in plan.families() {
                s.push_str(match fam {
                    Family::V4 => "# iptables-restore --noflush (IPv4)\n",
                    Family::V6 => "# ip6tables-restore --noflush (IPv6)\n",
                });
                s.push_str(&iptables::render_converge(&plan, fam, &Default::default()));
            }
            s
        }
    }
}

fn inspect(args: &[&str]) -> Result<String, String> {
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
    let mut found = false;
    for variant in [Variant::Legacy, Variant::Nft] {
        for (fam, base) in [(Family::V4, "iptables"), (Family::V6, "ip6tables")] {
            let tool = format!("{base}-{}-save", variant.name());
            let Some(t) = capture::find_tool(&tool) else {
                continue;
            };
            let mut c = ns.command(t);
            c.args(["-t", "nat"]);
            let Ok(o) = run_tool(c, b"", capture::TOOL_TIMEOUT) else {
                continue;
            };
            let saved = iptables::parse_save(&o.stdout);
            if saved.chains.is_empty() {
                continue;
            }
            found = true;
            let fam = if fam == Family::V4 { "IPv4" } else { "IPv6" };
            out.push_str(&format!(
                "backend: iptables, {} variant ({base}, {fam})\n",
                variant.name()
            ));
            out.push_str(&summary(saved.own_rules.iter().chain(saved.jumps.iter())));
            for l in saved.jumps.iter().chain(saved.own_rules.iter()) {
                out.push_str(&format!("  {l}\n"));
            }
        }
    }
    if let Ok(Some(t)) = nft::list(&ns) {
        found = true;
        out.push_str("backend: nftables (table inet multimesh)\n");
        out.push_str(&t);
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

fn summary<'a>(lines: impl Iterator<Item = &'a String>) -> String {
    let mut redirects = Vec::new();
    let mut ifs = Vec::new();
    for l in lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        for (i, x) in w.iter().enumerate() {
            if *x == "--to-ports" {
                if let Some(p) = w.get(i + 1) {
                    let dir = if l.starts_with("-A MULTIMESH_IN_REDIRECT") {
                        "inbound"
                    } else {
                        "outbound"
                    };
                    redirects.push(format!("{dir} -> {p}"));
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
