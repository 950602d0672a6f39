//! `multimesh agent`: the node agent, the DaemonSet's long-running process.
//!
//! It does what `multimesh install --watch` does (an install pass at start
//! and every `--watch` seconds), serves `/healthz`, `/readyz` and
//! `/metrics` (`server`), removes the node taint
//! `multimesh.io/not-ready:NoSchedule` once ready, watches the pods of its
//! node (`watch`) and repairs meshed pods that run without capture
//! (`repair`), finding their network namespaces by their IPs (`locate`).
//! It counts every CNI call of the plugin from the plugin's journal
//! (`crate::journal`) in `metrics`.
//!
//! Threads only, no async runtime: the main loop (install passes, journal,
//! taint, liveness), the HTTP server, the pod watch, the repair worker. The
//! watch hands the worker candidate pods over a channel.

pub mod locate;
pub mod metrics;
pub mod pods;
pub mod repair;
pub mod server;
pub mod watch;

use crate::capture::CaptureConfig;
use crate::install;
use crate::k8s::client::Client;
use crate::k8s::kubeconfig;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const HELP: &str = "\
multimesh agent - the node agent (the DaemonSet's process)

Usage: multimesh agent [INSTALL OPTIONS] [OPTIONS]

Installs multimesh as `multimesh install` does and keeps it current (every
--watch seconds, default 30; until the first pass succeeds, every 2 s:
not ready meanwhile, whatever --wait-for-primary says), serves /healthz, /readyz (installed and
watching the API server) and Prometheus /metrics, removes the node taint
multimesh.io/not-ready:NoSchedule once ready, and watches the pods of its
node: a meshed pod running without capture (started before multimesh was
installed, or its multimesh-validation init container exited 95) is
repaired, labelled or deleted per --repair-mode, with a pod Event.

Options (default in brackets), and every option of `multimesh install`
except --uninstall (see multimesh install --help):
  --listen ADDR:PORT          address of /healthz, /readyz, /metrics [0.0.0.0:9190]
  --node-name NAME            this node [$NODE_NAME]
  --kubeconfig PATH           the agent's API credentials [in-cluster service account]
  --netns-dir DIR             bind mounts of pod network namespaces, repeatable
                              [/var/run/netns]; the namespaces of the node's
                              processes are searched too
  --repair-mode MODE          repair (program capture in the pod's namespace,
                              no restart), label (multimesh.io/uninitialized=true),
                              delete (the pod restarts with capture) or off
                              (count and log only) [repair]
  -h, --help                  this text
";

/// The default `--listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9190";
/// The default `--netns-dir`.
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";
/// The default install interval (`--watch`).
pub const DEFAULT_INSTALL_EVERY: Duration = Duration::from_secs(30);
/// Install passes are retried this often until one succeeds (the primary
/// network config may not be written yet: `--wait-for-primary` is this
/// wait, the agent not ready meanwhile).
pub const INSTALL_RETRY: Duration = Duration::from_secs(2);
/// Most `--netns-dir` options.
pub const MAX_NETNS_DIRS: usize = 16;
/// The taint removed from the node once the agent is ready.
pub const TAINT_KEY: &str = "multimesh.io/not-ready";
pub const TAINT_EFFECT: &str = "NoSchedule";
/// Most taints a node may carry for the agent to look through.
pub const MAX_TAINTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    Repair,
    Label,
    Delete,
    Off,
}

impl RepairMode {
    pub fn parse(s: &str) -> Option<RepairMode> {
        Some(match s {
            "repair" => RepairMode::Repair,
            "label" => RepairMode::Label,
            "delete" => RepairMode::Delete,
            "off" => RepairMode::Off,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            RepairMode::Repair => "repair",
            RepairMode::Label => "label",
            RepairMode::Delete => "delete",
            RepairMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub install: install::Options,
    pub install_every: Duration,
    pub listen: SocketAddr,
    pub node_name: String,
    pub kubeconfig: Option<PathBuf>,
    pub netns_dirs: Vec<PathBuf>,
    pub repair_mode: RepairMode,
}

/// Parse the agent's options: its own and every `install` option.
pub fn parse_args(args: &[&str], env: impl Fn(&str) -> Option<String>) -> Result<Options, String> {
    const OWN: &[&str] = &[
        "listen",
        "node-name",
        "kubeconfig",
        "netns-dir",
        "repair-mode",
    ];
    let names: Vec<&'static str> = install::VALUE_FLAGS.iter().chain(OWN).copied().collect();
    let f = crate::flags::Flags::parse_repeatable(args, &names, &["netns-dir"], &["uninstall"])?
        .ok_or("--help is handled by the caller")?;
    if f.switch("uninstall") {
        return Err(
            "--uninstall is not an agent option (use multimesh install --uninstall)".into(),
        );
    }
    for n in OWN {
        if f.values(n).any(str::is_empty) {
            return Err(format!("--{n}: empty value"));
        }
    }
    let get = |n: &str| f.value(n.trim_start_matches("--"));
    let install = install::from_flags(&f, &env)?;
    let listen: SocketAddr = get("--listen")
        .unwrap_or(DEFAULT_LISTEN)
        .parse()
        .map_err(|_| "--listen: not an ADDR:PORT (an IPv6 address in brackets)".to_string())?;
    let node_name = match get("--node-name") {
        Some(n) => n.to_string(),
        None => env("NODE_NAME")
            .filter(|n| !n.is_empty())
            .ok_or("no node name: give --node-name or set NODE_NAME")?,
    };
    if !crate::k8s::pod::is_dns_subdomain(&node_name) {
        return Err(format!(
            "node name {:?} is not a valid Kubernetes name",
            node_name.chars().take(80).collect::<String>()
        ));
    }
    let mut netns_dirs: Vec<PathBuf> = f.values("netns-dir").map(PathBuf::from).collect();
    if netns_dirs.len() > MAX_NETNS_DIRS {
        return Err(format!("--netns-dir: at most {MAX_NETNS_DIRS}"));
    }
    if netns_dirs.is_empty() {
        netns_dirs.push(PathBuf::from(DEFAULT_NETNS_DIR));
    }
    let repair_mode = match get("--repair-mode") {
        None => RepairMode::Repair,
        Some(m) => RepairMode::parse(m).ok_or_else(|| {
            format!("--repair-mode: {m:?} is not one of repair, label, delete, off")
        })?,
    };
    Ok(Options {
        install_every: install.watch.unwrap_or(DEFAULT_INSTALL_EVERY),
        install,
        listen,
        node_name,
        kubeconfig: get("--kubeconfig").map(PathBuf::from),
        netns_dirs,
        repair_mode,
    })
}

/// What the threads share.
pub struct Shared {
    pub metrics: metrics::Metrics,
    pub installed: AtomicBool,
    /// A list of the node's pods succeeded and the watch goes on.
    pub watching: AtomicBool,
    /// When the main loop last ticked (seconds since the epoch).
    heartbeat: AtomicU64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            metrics: metrics::Metrics::new(),
            installed: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            heartbeat: AtomicU64::new(now_secs()),
        }
    }
    fn beat(&self) {
        self.heartbeat.store(now_secs(), Ordering::SeqCst);
    }
    pub fn alive(&self, stall: Duration) -> bool {
        now_secs().saturating_sub(self.heartbeat.load(Ordering::SeqCst)) <= stall.as_secs()
    }
    /// None when ready; else why not.
    pub fn not_ready(&self) -> Option<&'static str> {
        match (
            self.installed.load(Ordering::SeqCst),
            self.watching.load(Ordering::SeqCst),
        ) {
            (true, true) => None,
            (false, _) => Some("not installed"),
            (true, false) => Some("not watching the API server"),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Entry point from the CLI; returns the exit status.
pub fn main(args: &[&str]) -> i32 {
    if args.iter().any(|a| *a == "-h" || *a == "--help") {
        print!("{HELP}");
        return 0;
    }
    let o = match parse_args(args, |k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("multimesh agent: {e}\n(see multimesh agent --help)");
            return 2;
        }
    };
    match run(o) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("multimesh agent: {e}");
            1
        }
    }
}

fn api_client(o: &Options) -> Result<Client, String> {
    let cfg = match &o.kubeconfig {
        Some(p) => kubeconfig::load(p).map_err(|e| format!("kubeconfig {}: {e}", p.display()))?,
        None => kubeconfig::in_cluster(|k| std::env::var(k).ok())
            .ok_or("not in a cluster (no KUBERNETES_SERVICE_HOST): give --kubeconfig")?
            .map_err(|e| format!("in-cluster configuration: {e}"))?,
    };
    Client::new(cfg)
}

fn run(o: Options) -> Result<(), String> {
    crate::logging::init(
        crate::logging::Level::Verbose,
        true,
        None,
        format!("agent {}", o.node_name),
    );
    install::catch_terminate();
    // The capture config the install writes (profile and backend), as ADD
    // reads it from the conflist.
    let base = CaptureConfig::from_json(Some(&json!({
        "backend": o.install.capture_backend,
        "profile": o.install.capture_profile,
    })))
    .map_err(|e| e.msg)?;
    let cni_dir = o.install.state_dir.clone();
    let shared = Arc::new(Shared::new());
    server::start(o.listen, shared.clone())?;
    println!("multimesh agent: listening on {}", o.listen);
    let watch_client = api_client(&o)?;
    let worker_client = api_client(&o)?;
    let mut taint_client = api_client(&o)?;

    let mut journal: Option<crate::journal::Reader> = None;
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = repair::Worker::new(
        worker_client,
        cni_dir.clone(),
        o.repair_mode,
        o.netns_dirs.clone(),
        o.node_name.clone(),
        shared.clone(),
    );
    std::thread::Builder::new()
        .name("repair".into())
        .spawn(move || worker.run(rx))
        .map_err(|e| e.to_string())?;
    let watcher = watch::Watcher::new(watch_client, o.node_name.clone(), base, tx, shared.clone());
    std::thread::Builder::new()
        .name("watch".into())
        .spawn(move || watcher.run())
        .map_err(|e| e.to_string())?;

    let mut first = true;
    let mut next_install = Instant::now();
    let mut taint_removed = false;
    let mut next_taint = Instant::now();
    let mut taint_backoff = Duration::from_millis(500);
    while !install::terminating() {
        shared.beat();
        if Instant::now() >= next_install {
            // Never blocking the loop (liveness): a missing primary config
            // is waited for by retrying, not ready meanwhile.
            let pass = install::Options {
                wait_for_primary: Duration::ZERO,
                ..o.install.clone()
            };
            match install::install(&pass) {
                Ok(lines) => {
                    install::print_lines(&if first {
                        lines
                    } else {
                        install::changed(lines)
                    });
                    shared.installed.store(true, Ordering::SeqCst);
                    shared.metrics.installed.set(1);
                    shared
                        .metrics
                        .install_passes
                        .get_or_create(&metrics::OutcomeLabel { outcome: "ok" })
                        .inc();
                }
                Err(e) => {
                    eprintln!("multimesh agent: install: {e}");
                    shared.installed.store(false, Ordering::SeqCst);
                    shared.metrics.installed.set(0);
                    shared
                        .metrics
                        .install_passes
                        .get_or_create(&metrics::OutcomeLabel { outcome: "failed" })
                        .inc();
                }
            }
            first = false;
            next_install = Instant::now()
                + if shared.installed.load(Ordering::SeqCst) {
                    o.install_every
                } else {
                    o.install_every.min(INSTALL_RETRY)
                };
        }
        if journal.is_none() && shared.installed.load(Ordering::SeqCst) {
            match crate::journal::Reader::open(&cni_dir) {
                Ok(r) => journal = Some(r),
                Err(e) => eprintln!("multimesh agent: CNI call journal: {e}"),
            }
        }
        if let Some(j) = journal.as_mut() {
            for c in j.poll() {
                shared.metrics.cni_call(&c);
            }
        }
        if !taint_removed && shared.not_ready().is_none() && Instant::now() >= next_taint {
            match remove_taint(&mut taint_client, &o.node_name) {
                Ok(removed) => {
                    taint_removed = true;
                    if removed {
                        println!(
                            "multimesh agent: ready; removed the taint {TAINT_KEY}:{TAINT_EFFECT} from node {}",
                            o.node_name
                        );
                    } else {
                        println!("multimesh agent: ready");
                    }
                }
                Err(e) => {
                    eprintln!("multimesh agent: node taint: {e}");
                    next_taint = Instant::now() + taint_backoff;
                    taint_backoff = (taint_backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("multimesh agent: terminating");
    Ok(())
}

/// Remove `TAINT_KEY:TAINT_EFFECT` from the node: a JSON patch that tests
/// the taint is still at the index it was read at (a concurrent change
/// fails it, 422, and the caller tries again). Ok(false): no such taint.
fn remove_taint(client: &mut Client, node: &str) -> Result<bool, String> {
    let path = format!("/api/v1/nodes/{node}");
    let n = client.get(&path).map_err(|e| e.to_string())?;
    let taints = n
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let Some(i) = taint_index(taints, MAX_TAINTS).map_err(|e| format!("node {node}: {e}"))? else {
        return Ok(false);
    };
    let patch = json!([
        {"op": "test", "path": format!("/spec/taints/{i}"), "value": taints[i]},
        {"op": "remove", "path": format!("/spec/taints/{i}")},
    ]);
    client
        .patch(
            &path,
            "application/json-patch+json",
            &serde_json::to_vec(&patch).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
    Ok(true)
}

/// Where `TAINT_KEY:TAINT_EFFECT` is among `taints`; an error when there
/// are more than `max` (none is looked at).
fn taint_index(taints: &[Value], max: usize) -> Result<Option<usize>, String> {
    if taints.len() > max {
        return Err(format!("more than {max} taints"));
    }
    Ok(taints.iter().position(|t| {
        t.get("key").and_then(Value::as_str) == Some(TAINT_KEY)
            && t.get("effect").and_then(Value::as_str) == Some(TAINT_EFFECT)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "NODE_NAME" => Some("node-a".into()),
            "KUBERNETES_SERVICE_HOST" => Some("198.51.100.1".into()),
            "KUBERNETES_SERVICE_PORT" => Some("443".into()),
            _ => None,
        }
    }

    #[test]
    fn options_and_defaults() {
        let o = parse_args(&[], env).unwrap();
        assert_eq!(o.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(o.node_name, "node-a");
        assert_eq!(o.netns_dirs, [PathBuf::from(DEFAULT_NETNS_DIR)]);
        assert_eq!(o.repair_mode, RepairMode::Repair);
        assert_eq!(o.install_every, DEFAULT_INSTALL_EVERY);
        assert_eq!(o.kubeconfig, None);
        assert_eq!(o.install.capture_profile, "istio");
        let o = parse_args(
            &[
                "--listen=127.0.0.1:9",
                "--capture-profile",
                "linkerd",
                "--netns-dir",
                "/a",
                "--netns-dir=/b",
                "--node-name",
                "n2",
                "--repair-mode",
                "label",
                "--watch",
                "5",
                "--kubeconfig",
                "/k",
            ],
            env,
        )
        .unwrap();
        assert_eq!(o.listen, "127.0.0.1:9".parse().unwrap());
        assert_eq!(o.install.capture_profile, "linkerd");
        assert_eq!(o.netns_dirs, [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(o.node_name, "n2");
        assert_eq!(o.repair_mode, RepairMode::Label);
        assert_eq!(o.install_every, Duration::from_secs(5));
        assert_eq!(o.kubeconfig, Some(PathBuf::from("/k")));
    }

    #[test]
    fn bad_options() {
        let no_node = |k: &str| env(k).filter(|_| k != "NODE_NAME");
        for (args, want) in [
            (&["--repair-mode", "fix"][..], "repair-mode"),
            (&["--listen", "localhost"], "--listen"),
            (&["--node-name", "Bad_Node"], "node name"),
            (&["--node-name", "a", "--node-name", "b"], "twice"),
            (&["--uninstall"], "--uninstall"),
            (&["--bogus"], "unknown option"),
            (&["--repair-mode"], "missing argument"),
            (&["--capture-profile", "cilium"], "profile"),
        ] {
            let e = parse_args(args, env).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert!(parse_args(&[], no_node).unwrap_err().contains("NODE_NAME"));
        let many: Vec<String> = (0..=MAX_NETNS_DIRS)
            .map(|i| format!("--netns-dir=/d{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(parse_args(&many, env).unwrap_err().contains("at most"));
        // Exactly the bound is fine.
        assert_eq!(MAX_NETNS_DIRS, 16);
        let o = parse_args(&many[..MAX_NETNS_DIRS], env).unwrap();
        assert_eq!(o.netns_dirs.len(), MAX_NETNS_DIRS);
    }

    /// The taint is found among at most `max` taints; past that the node
    /// is refused whole (the agent's `MAX_TAINTS`, 1024).
    #[test]
    fn taints_are_bounded() {
        assert_eq!(MAX_TAINTS, 1024);
        let ours = json!({"key": TAINT_KEY, "effect": TAINT_EFFECT});
        let other = |i: usize| json!({"key": format!("t{i}"), "effect": "NoSchedule"});
        let mut taints: Vec<Value> = (0..3).map(other).collect();
        taints.push(json!({"key": TAINT_KEY, "effect": "NoExecute"}));
        assert_eq!(taint_index(&taints, 4), Ok(None));
        taints.push(ours.clone());
        assert_eq!(taint_index(&taints, 5), Ok(Some(4)));
        assert_eq!(taint_index(&taints, MAX_TAINTS), Ok(Some(4)));
        assert!(taint_index(&taints, 4)
            .unwrap_err()
            .contains("more than 4 taints"));
        let mut many: Vec<Value> = (0..MAX_TAINTS).map(other).collect();
        many.push(ours);
        assert!(taint_index(&many, MAX_TAINTS).is_err());
        assert_eq!(
            taint_index(&many[1..], MAX_TAINTS),
            Ok(Some(MAX_TAINTS - 1))
        );
        assert_eq!(taint_index(&[], MAX_TAINTS), Ok(None));
    }

    #[test]
    fn readiness() {
        let s = Shared::new();
        assert_eq!(s.not_ready(), Some("not installed"));
        s.installed.store(true, Ordering::SeqCst);
        assert_eq!(s.not_ready(), Some("not watching the API server"));
        s.watching.store(true, Ordering::SeqCst);
        assert_eq!(s.not_ready(), None);
        assert!(s.alive(Duration::from_secs(1)));
    }
}
