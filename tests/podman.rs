//! multimesh under a real container runtime: Podman (Debian's 4.3, CNI
//! network backend, runc) starting busybox containers on networks whose
//! conflists use multimesh, checked from inside the container (`podman
//! exec`) and from outside (its netns), with real TCP/UDP through the
//! capture rules, and `podman rm` proven to leave nothing behind.
//!
//! Isolation: every test gets its own node netns (tests/common) and runs
//! every podman command in it with `nsenter --net` (the host mount
//! namespace is kept, so podman's /run/netns/netns-* bind mounts are seen by
//! all of its invocations). Bridges, veths, portmap rules and IPAM therefore
//! live in the node netns; podman's state is private: a `CONTAINERS_CONF`
//! with its own network config dir (the CNI backend), `--root`/`--runroot`
//! (vfs), tmp dir, file locks and event log under the test directory, and a
//! cgroup parent of its own that is removed at the end. The rootfs is a
//! directory with busybox-static (`podman run --rootfs`); no image, no
//! registry. Podman's default network is never used (every container names
//! its network) and is pointed at a documentation range anyway.
//!
//! Needs: podman, runc, busybox-static (scripts/deps.sh installs them).

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const IN_PORT: u16 = 15006;
const OUT_PORT: u16 = 15001;
/// Bounds every podman command (first use of a fresh --root included).
const PODMAN_TIMEOUT_S: u32 = 120;

struct Podman {
    node: Node,
    dir: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
}

fn out_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Podman {
    fn new(tag: &str) -> Podman {
        for (tool, pkg) in [
            ("/usr/bin/podman", "podman"),
            ("/usr/sbin/runc", "runc"),
            ("/bin/busybox", "busybox-static"),
        ] {
            assert!(
                Path::new(tool).exists() || which(tool).is_some(),
                "{tool} missing: install {pkg} (scripts/deps.sh does)"
            );
        }
        let node = Node::new(tag);
        let dir = node.dir.join("podman");
        for d in ["root", "runroot", "tmp", "net"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let rootfs = dir.join("rootfs");
        build_rootfs(&rootfs);
        let p = Podman {
            cgroup_parent: format!("/{}", node.name),
            node,
            rootfs,
            dir,
        };
        std::fs::write(p.dir.join("containers.conf"), p.containers_conf()).unwrap();
        p
    }

    /// The engine configuration: CNI backend with our plugin dirs and
    /// network config dir, runc, cgroupfs, file events/locks, ulimits within
    /// this machine's (`ulimit -n -u`: 20000 / 96365 here).
    fn containers_conf(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
env = ["PATH=/bin"]
netns = "bridge"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
runtime = "runc"
tmp_dir = "{d}/tmp"
lock_type = "file"

[network]
network_backend = "cni"
cni_plugin_dirs = ["{bin}", "{refp}"]
network_config_dir = "{d}/net"
default_network = "mmdefault"
default_subnet = "203.0.113.192/27"
"#,
            bin = bin_dir().display(),
            refp = REF_PLUGINS,
        )
    }

    /// A podman command in the node netns with the private configuration
    /// (bounded by `timeout`).
    fn command(&self, args: &[&str]) -> Command {
        let d = &self.dir;
        let mut c = Command::new("timeout");
        c.arg(PODMAN_TIMEOUT_S.to_string())
            .arg("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node.name))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null());
        c
    }

    fn cmd(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run podman")
    }

    /// Run several podman commands at once; all must succeed.
    fn all_at_once(&self, runs: &[Vec<String>]) -> Vec<String> {
        let children: Vec<_> = runs
            .iter()
            .map(|a| {
                let a: Vec<&str> = a.iter().map(String::as_str).collect();
                self.command(&a)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn podman")
            })
            .collect();
        children
            .into_iter()
            .zip(runs)
            .map(|(c, a)| {
                let o = c.wait_with_output().expect("wait podman");
                assert!(o.status.success(), "podman {a:?} failed: {}", out_text(&o));
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            })
            .collect()
    }

    /// `podman run` arguments for a busybox container sleeping.
    fn run_args(&self, name: &str, network: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--cgroup-parent",
            &self.cgroup_parent,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        args.extend(extra.iter().map(|x| x.to_string()));
        let rootfs = self.rootfs.display().to_string();
        args.extend(["--rootfs", &rootfs, "sleep", "600"].map(String::from));
        args
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            o.status.success(),
            "podman {args:?} failed: {}",
            out_text(&o)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// Write a network config (conflist) the CNI backend will find.
    fn network(&self, name: &str, plugins: Vec<Value>) {
        let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
        std::fs::write(
            self.dir.join("net").join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
    }

    /// A multimesh plugin entry with this node's dirs; `extra` merged in.
    fn multimesh(&self, extra: Value) -> Value {
        let mut v = json!({
            "type": "multimesh",
            "cniDir": self.node.cni_dir().display().to_string(),
            "binDir": bin_dir().display().to_string(),
            "confDir": self.node.dir.join("conf").display().to_string(),
            "logLevel": "debug",
            "logToStderr": false,
            "logFile": self.dir.join("multimesh.log").display().to_string(),
        });
        if let Value::Object(e) = extra {
            v.as_object_mut().unwrap().extend(e);
        }
        v
    }

    /// `podman run -d` a busybox container sleeping; returns its ID.
    fn run(&self, name: &str, network: &str, extra: &[&str]) -> String {
        let args = self.run_args(name, network, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self.ok(&args);
        assert!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "podman run printed {id:?}"
        );
        id
    }

    fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name])
    }

    /// The container's netns path (/run/netns/netns-...).
    fn sandbox(&self, name: &str) -> String {
        let s = self.inspect(name, "{{.NetworkSettings.SandboxKey}}");
        assert!(s.starts_with("/run/netns/"), "SandboxKey {s:?}");
        s
    }

    /// `podman exec NAME sh -c CMD` (inside the container: busybox tools).
    fn exec(&self, name: &str, cmd: &str) -> Output {
        self.cmd(&["exec", name, "sh", "-c", cmd])
    }
    fn exec_ok(&self, name: &str, cmd: &str) -> String {
        let o = self.exec(name, cmd);
        assert!(
            o.status.success(),
            "podman exec {name} {cmd:?}: {}",
            out_text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn rm(&self, name: &str) {
        self.ok(&["rm", "-f", "-t", "0", name]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (their DEL needs the node netns), then podman's
        // cgroups and any mount podman left under the test dir; the node
        // (netns and dir) goes when its own Drop runs after this one.
        let _ = self.cmd(&["rm", "-a", "-f", "-t", "0"]);
        remove_cgroups(&self.cgroup_parent);
        let d = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
            if m.starts_with(&d) {
                sh(&format!("umount -l {m}"));
            }
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let name = Path::new(tool).file_name()?;
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.exists())
}

/// A busybox-static rootfs: bin/busybox plus one symlink per applet.
fn build_rootfs(root: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = sh_ok("/bin/busybox --list");
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

/// The netns name for `ip netns exec` (podman's netns live in /run/netns).
fn ns_name(sandbox: &str) -> String {
    sandbox.trim_start_matches("/run/netns/").to_string()
}

/// IPv4 addresses (CIDR) of an interface as `ip -o -4 addr` prints them.
fn v4_addrs(ip_o_addr: &str, ifname: &str) -> Vec<String> {
    ip_o_addr
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() > 3 && w[1].split('@').next() == Some(ifname) && w[2] == "inet")
                .then(|| w[3].to_string())
        })
        .collect()
}

fn host(cidr: &str) -> String {
    cidr.split('/').next().unwrap().to_string()
}

fn mac_of(ip_o_link: &str, ifname: &str) -> String {
    ip_o_link
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .map(|n| n.trim_end_matches(':').split('@').next())
                == Some(Some(ifname))
        })
        .and_then(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| *x == "link/ether")
                .map(|i| w[i + 1].to_string())
        })
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {ip_o_link}"))
}

/// Everything `podman rm` must have undone, beyond Node::leaks (multimesh
/// state, IPAM allocations, host veths).
fn assert_removed(p: &Podman, id: &str, sandbox: &str, held: &HeldNetns) {
    let all = held.exec(EVERY_RULESET);
    assert!(
        !mentions_multimesh(&all),
        "capture rules left in the container netns after podman rm:\n{all}"
    );
    let links = held.exec("ip -o link show | awk -F': ' '{print $2}'");
    assert_eq!(links.trim(), "lo", "interfaces left in the container netns");
    assert!(!Path::new(sandbox).exists(), "podman left {sandbox}");
    for br in ["mm0", "mm1"] {
        let ports = p
            .node
            .exec(&format!("ip -o link show master {br} 2>/dev/null"));
        let ports = String::from_utf8_lossy(&ports.stdout).to_string();
        assert!(
            ports.trim().is_empty(),
            "ports left on {br}: {ports}\nmultimesh log (errors and DELs):\n{}",
            std::fs::read_to_string(p.dir.join("multimesh.log"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(" error ") || l.contains("DEL"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // libcni's result cache (podman does not make it configurable).
    let cached: Vec<String> = walk(Path::new("/var/lib/cni/results"))
        .into_iter()
        .filter(|f| f.contains(id))
        .collect();
    assert!(cached.is_empty(), "libcni cache left: {cached:?}");
    p.node.assert_no_leaks();
}

/// The cluster network as a conflist: bridge mm0 + portmap (which gets
/// podman's `-p` through multimesh's runtimeConfig, by capability).
fn cluster_with_portmap(node: &Node) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [
        node.cluster_bridge(),
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
    ]})
}

fn backend_line(p: &Podman, sandbox: &str) -> String {
    let o = sh_ok(&format!("{BIN} inspect --netns {sandbox}"));
    o.lines()
        .find(|l| l.starts_with("backend:"))
        .unwrap_or_else(|| panic!("multimesh inspect shows no capture:\n{o}\nlog:\n{}", log(p)))
        .to_string()
}

fn log(p: &Podman) -> String {
    std::fs::read_to_string(p.dir.join("multimesh.log")).unwrap_or_default()
}

/// Meta-plugin network (eth0: bridge mm0 + portmap, net1: macvlan on the
/// node's mmv0) with capture on, one container: interfaces, addresses,
/// rules, inbound/outbound/port-mapped TCP redirected, UDP not, then
/// `podman rm` leaves nothing.
fn meta_network_end_to_end(tag: &str, capture: Value, expect_backend: &str) {
    let t0 = Instant::now();
    let p = Podman::new(tag);
    let node = &p.node;
    p.network(
        "mmnet",
        vec![p.multimesh(json!({
            "capabilities": {"portMappings": true},
            "delegates": [cluster_with_portmap(node), node.macvlan()],
            "capture": capture,
        }))],
    );
    let nets = p.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.lines().any(|l| l == "mmnet multimesh"), "{nets}");

    let id = p.run("app", "mmnet", &["-p", "18080:8080"]);
    let sandbox = p.sandbox("app");
    let ns = ns_name(&sandbox);

    // The engine settings took (runc would refuse limits above the host's).
    assert_eq!(p.exec_ok("app", "ulimit -n; ulimit -u"), "1024\n1024\n");
    // Inside: busybox sees eth0 (cluster, 198.51.100.0/25) and net1
    // (macvlan, 203.0.113.0/25).
    let inside = p.exec_ok("app", "ip -o -4 addr");
    let eth0 = v4_addrs(&inside, "eth0");
    let net1 = v4_addrs(&inside, "net1");
    assert_eq!(eth0.len(), 1, "{inside}");
    assert_eq!(net1.len(), 1, "{inside}");
    assert!(
        eth0[0].starts_with("198.51.100.") && eth0[0].ends_with("/25"),
        "{inside}"
    );
    assert!(
        net1[0].starts_with("203.0.113.") && net1[0].ends_with("/25"),
        "{inside}"
    );
    let (eth0, net1) = (host(&eth0[0]), host(&net1[0]));
    // Podman's view is the cluster network's result (as Multus returns).
    assert_eq!(
        p.inspect("app", "{{.NetworkSettings.Networks.mmnet.IPAddress}}"),
        eth0
    );
    // Outside: the same from the container's netns.
    let outside = ns_exec_ok(&ns, "ip -o -4 addr");
    assert_eq!(host(&v4_addrs(&outside, "eth0")[0]), eth0);
    assert_eq!(host(&v4_addrs(&outside, "net1")[0]), net1);
    let pid = p.inspect("app", "{{.State.Pid}}");
    let via_pid = sh_ok(&format!("nsenter --net=/proc/{pid}/ns/net ip -o -4 addr"));
    assert_eq!(v4_addrs(&via_pid, "net1"), v4_addrs(&outside, "net1"));

    // The rules, as the tools and `multimesh inspect` show them.
    let line = backend_line(&p, &sandbox);
    assert!(line.contains(expect_backend), "{line}");
    let rules = ns_exec_ok(
        &ns,
        "iptables-legacy-save -t nat; iptables-nft-save -t nat; nft list ruleset",
    );
    if expect_backend.contains("nftables") {
        assert!(rules.contains("table inet multimesh"), "{rules}");
    } else {
        for c in [
            "-A PREROUTING -p tcp -j MULTIMESH_INBOUND",
            "-A OUTPUT -p tcp -j MULTIMESH_OUTPUT",
            "-A MULTIMESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A MULTIMESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        ] {
            assert!(rules.contains(c), "{c} missing:\n{rules}");
        }
    }
    assert!(!rules.to_lowercase().contains("udp"), "{rules}");

    // Inbound TCP on both interfaces and through the port mapping lands on
    // the proxy's inbound port with the original destination intact.
    {
        let _proxy = Listener::start(&ns, IN_PORT, false, 3);
        for (ip, what) in [(&eth0, "eth0"), (&net1, "net1 (macvlan)")] {
            let a = connect(&node.name, ip, 8080, false, None)
                .unwrap_or_else(|e| panic!("inbound via {what}: {e}"));
            assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{what}: {a}");
            assert_eq!(field(&a, "orig"), format!("{ip}:8080"), "{what}: {a}");
        }
        let a = connect(&node.name, "198.51.100.1", 18080, false, None)
            .unwrap_or_else(|e| panic!("port mapping 18080->8080: {e}"));
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
        assert_eq!(field(&a, "orig"), format!("{eth0}:8080"), "{a}");
    }
    // Outbound TCP opened by the app inside the container (busybox nc)
    // goes to the proxy's outbound port; nothing listens on the node.
    {
        let _proxy = Listener::start(&ns, OUT_PORT, false, 1);
        let a = p.exec_ok("app", "echo hello | nc -w 5 198.51.100.1 80");
        assert_eq!(field(a.trim(), "served_by"), OUT_PORT.to_string(), "{a}");
        assert_eq!(field(a.trim(), "orig"), "198.51.100.1:80", "{a}");
    }
    // UDP is not redirected (a TCP proxy listens on the inbound port).
    {
        let _proxy = Listener::start(&ns, IN_PORT, false, 1);
        let _app = Listener::start(&ns, 8080, true, 1);
        let a = connect(&node.name, &eth0, 8080, true, None).expect("UDP to the app");
        assert_eq!(field(&a, "served_by"), "8080", "{a}");
        assert_eq!(field(&a, "orig"), "-", "{a}");
    }
    let state = node.cni_dir().join(&id).join("eth0.json");
    assert!(state.exists(), "no multimesh state at {}", state.display());
    let nat_node =
        node.exec_ok("iptables-save -t nat 2>/dev/null; iptables-legacy-save -t nat 2>/dev/null");
    assert!(
        nat_node.contains("18080"),
        "portmap rules missing on the node:\n{nat_node}"
    );

    let held = HeldNetns::open(&sandbox);
    p.rm("app");
    assert_removed(&p, &id, &sandbox, &held);
    let nat_node =
        node.exec_ok("iptables-save -t nat 2>/dev/null; iptables-legacy-save -t nat 2>/dev/null");
    assert!(
        !nat_node.contains("18080"),
        "portmap rules left on the node:\n{nat_node}"
    );
    eprintln!("[{tag}] {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn meta_network_iptables() {
    meta_network_end_to_end(
        "pdipt",
        json!({"backend": "iptables", "iptablesVariant": "auto"}),
        "backend: iptables",
    );
}

#[test]
fn meta_network_nftables() {
    meta_network_end_to_end("pdnft", json!({"backend": "nftables"}), "backend: nftables");
}

/// `podman run --ip/--mac-address` puts IP= and MAC= in CNI_ARGS. They are
/// requests for the container's interface on this network: the cluster
/// network gets them, net1 must not (before the fix every delegate got
/// them and host-local on net1 refused the foreign address: the container
/// did not start).
#[test]
fn static_ip_and_mac_go_to_the_cluster_network_only() {
    let p = Podman::new("pdip");
    let node = &p.node;
    p.network(
        "mmnet",
        vec![p.multimesh(json!({
            "delegates": [node.cluster_bridge(), node.second_bridge(),
                          node.recorder("rec", json!({}))],
            "capture": {"backend": "iptables"},
        }))],
    );
    let id = p.run(
        "fixed",
        "mmnet",
        &[
            "--ip",
            "198.51.100.77",
            "--mac-address",
            "02:00:00:00:00:42",
        ],
    );
    let sandbox = p.sandbox("fixed");
    let addrs = p.exec_ok("fixed", "ip -o -4 addr");
    assert_eq!(v4_addrs(&addrs, "eth0"), ["198.51.100.77/25"], "{addrs}");
    let n1 = v4_addrs(&addrs, "net1");
    assert!(
        n1.len() == 1 && n1[0].starts_with("198.51.100.1"),
        "{addrs}"
    );
    let links = p.exec_ok("fixed", "ip -o link");
    assert_eq!(mac_of(&links, "eth0"), "02:00:00:00:00:42");
    assert_ne!(mac_of(&links, "net1"), "02:00:00:00:00:42", "{links}");
    // What podman 4.3 passes, as a delegate on net2 sees it: CNI_ARGS with
    // IgnoreUnknown and K8S_POD_NAME (the container name; no namespace,
    // UID or infra ID), the IP/MAC requests kept for the cluster network.
    let calls = node.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["ifname"], "net2");
    assert_eq!(calls[0]["containerID"], id.as_str());
    assert_eq!(calls[0]["netns"], sandbox.as_str());
    assert_eq!(calls[0]["args"], "IgnoreUnknown=1;K8S_POD_NAME=fixed");
    let held = HeldNetns::open(&sandbox);
    p.rm("fixed");
    assert_removed(&p, &id, &sandbox, &held);
}

/// multimesh chained after `bridge` in a podman conflist (capture only):
/// podman's result is the bridge's (prevResult passed through), capture
/// works, DEL removes it.
#[test]
fn chained_after_bridge() {
    let p = Podman::new("pdchain");
    let node = &p.node;
    let mut bridge = node.cluster_bridge();
    bridge.as_object_mut().unwrap().remove("name");
    p.network(
        "chained",
        vec![
            bridge,
            p.multimesh(json!({"capture": {"backend": "iptables", "iptablesVariant": "nft"}})),
        ],
    );
    let id = p.run("web", "chained", &[]);
    let sandbox = p.sandbox("web");
    let ns = ns_name(&sandbox);
    let addrs = p.exec_ok("web", "ip -o -4 addr");
    let eth0 = v4_addrs(&addrs, "eth0");
    assert_eq!(eth0.len(), 1, "{addrs}");
    let eth0 = host(&eth0[0]);
    assert_eq!(
        p.inspect("web", "{{.NetworkSettings.Networks.chained.IPAddress}}"),
        eth0,
        "the bridge's result reached podman through multimesh"
    );
    assert_eq!(
        p.inspect("web", "{{.NetworkSettings.Networks.chained.Gateway}}"),
        "198.51.100.1"
    );
    let mac = mac_of(&p.exec_ok("web", "ip -o link"), "eth0");
    assert_eq!(
        p.inspect("web", "{{.NetworkSettings.Networks.chained.MacAddress}}"),
        mac
    );
    assert!(backend_line(&p, &sandbox).contains("nft variant"));
    let rec: Value =
        serde_json::from_slice(&std::fs::read(node.cni_dir().join(&id).join("eth0.json")).unwrap())
            .unwrap();
    assert_eq!(rec["mode"], "chained");
    {
        let _proxy = Listener::start(&ns, IN_PORT, false, 1);
        let a = connect(&node.name, &eth0, 8080, false, None).expect("inbound");
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
        assert_eq!(field(&a, "orig"), format!("{eth0}:8080"), "{a}");
    }
    {
        let _proxy = Listener::start(&ns, OUT_PORT, false, 1);
        let a = p.exec_ok("web", "echo hi | nc -w 5 203.0.113.126 443");
        assert_eq!(field(a.trim(), "orig"), "203.0.113.126:443", "{a}");
    }
    let held = HeldNetns::open(&sandbox);
    p.rm("web");
    assert_removed(&p, &id, &sandbox, &held);
}

/// The container lifecycle around one attachment: restart (DEL then ADD
/// with the same container ID in a new netns), `network connect` of a
/// chained capture network (a second record sharing the rules), `network
/// disconnect` (the rules stay: the meta attachment still wants them),
/// `network reload` (DEL then ADD in the same netns), stop/start, and rm.
#[test]
fn restart_connect_disconnect_stop_start() {
    let p = Podman::new("pdlife");
    let node = &p.node;
    let cap = json!({"backend": "iptables", "iptablesVariant": "legacy"});
    p.network(
        "mmnet",
        vec![p.multimesh(json!({
            "delegates": [node.cluster_bridge(), node.macvlan()],
            "capture": cap,
        }))],
    );
    p.network(
        "extra",
        vec![node.second_bridge(), p.multimesh(json!({"capture": cap}))],
    );
    let id = p.run("life", "mmnet", &[]);
    let records = |want: &[&str]| {
        let mut got: Vec<String> = walk(&node.cni_dir().join(&id))
            .into_iter()
            .filter(|f| f.ends_with(".json"))
            .map(|f| {
                Path::new(&f)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "multimesh records of {id}");
    };
    let nat = |ns: &str| ns_exec_ok(ns, "iptables-legacy-save -t nat");
    let hooks = |ns: &str| nat(ns).matches("-j MULTIMESH_OUTPUT").count();
    records(&["eth0.json"]);
    let first = p.sandbox("life");

    p.ok(&["restart", "-t", "0", "life"]);
    let second = p.sandbox("life");
    assert_ne!(first, second, "restart did not make a new netns");
    assert!(!Path::new(&first).exists());
    records(&["eth0.json"]);
    assert_eq!(hooks(&ns_name(&second)), 1, "{}", nat(&ns_name(&second)));
    assert_eq!(
        v4_addrs(&p.exec_ok("life", "ip -o -4 addr"), "net1").len(),
        1
    );

    p.ok(&["network", "connect", "extra", "life"]);
    records(&["eth0.json", "eth1.json"]);
    let addrs = p.exec_ok("life", "ip -o -4 addr");
    assert!(
        v4_addrs(&addrs, "eth1")[0].starts_with("198.51.100.1"),
        "{addrs}"
    );
    assert_eq!(hooks(&ns_name(&second)), 1, "rules duplicated");

    p.ok(&["network", "disconnect", "extra", "life"]);
    records(&["eth0.json"]);
    assert!(v4_addrs(&p.exec_ok("life", "ip -o -4 addr"), "eth1").is_empty());
    assert_eq!(
        hooks(&ns_name(&second)),
        1,
        "disconnecting the chained network removed rules the meta one uses"
    );
    {
        let ns = ns_name(&second);
        let eth0 = host(&v4_addrs(&ns_exec_ok(&ns, "ip -o -4 addr"), "eth0")[0]);
        let _proxy = Listener::start(&ns, IN_PORT, false, 1);
        let a = connect(&node.name, &eth0, 8080, false, None).expect("inbound");
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
    }

    // `network reload` (podman's way to restore firewall rules) runs DEL
    // then ADD in the same netns: the same record, the rules once.
    p.ok(&["network", "reload", "life"]);
    records(&["eth0.json"]);
    assert_eq!(p.sandbox("life"), second);
    assert_eq!(hooks(&ns_name(&second)), 1, "{}", nat(&ns_name(&second)));
    assert_eq!(
        v4_addrs(&p.exec_ok("life", "ip -o -4 addr"), "net1").len(),
        1
    );

    p.ok(&["stop", "-t", "0", "life"]);
    assert!(
        !node.cni_dir().join(&id).exists(),
        "state left after stop: {:?}",
        walk(&node.cni_dir())
    );
    node.assert_no_leaks_within(Duration::from_secs(5));
    p.ok(&["start", "life"]);
    records(&["eth0.json"]);
    let third = p.sandbox("life");
    assert_eq!(hooks(&ns_name(&third)), 1);
    let held = HeldNetns::open(&third);
    p.rm("life");
    assert_removed(&p, &id, &third, &held);
}

/// A delegate failing under podman: the error reaches the user, multimesh
/// rolls back, and podman's own cleanup (DEL) succeeds.
#[test]
fn failed_add_is_reported_and_leaves_nothing() {
    let p = Podman::new("pdfail");
    let node = &p.node;
    p.network(
        "broken",
        vec![p.multimesh(json!({
            "delegates": [node.cluster_bridge(),
                          node.recorder("failing", json!({"failOn": "ADD", "failCode": 11}))],
            "capture": {"backend": "nftables"},
        }))],
    );
    let rootfs = p.rootfs.display().to_string();
    let o = p.cmd(&[
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "broken",
        "--cgroup-parent",
        &p.cgroup_parent.clone(),
        "--rootfs",
        &rootfs,
        "sleep",
        "600",
    ]);
    assert!(
        !o.status.success(),
        "podman run succeeded: {}",
        out_text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mm-recorder: ADD failed as configured") && err.contains("failing"),
        "podman did not show multimesh's error: {err}"
    );
    let _ = p.cmd(&["rm", "-f", "-t", "0", "bad"]);
    node.assert_no_leaks_within(Duration::from_secs(5));
    let calls = node.call_list();
    // ADD failed, rolled back (DEL), and podman's teardown DEL came too.
    assert_eq!(calls[0], "ADD net1", "{calls:?}");
    assert!(calls[1..].iter().all(|c| c == "DEL net1"), "{calls:?}");
}

/// Two multimesh meta-plugin networks on one container, both with a second
/// delegate: each would name its extra interface net1 (names are by
/// position within one multimesh network, as with Multus). The second ADD
/// is refused (106) before its delegates run, and podman's rollback leaves
/// nothing.
#[test]
fn two_meta_networks_on_one_container_collide_cleanly() {
    let p = Podman::new("pdtwo");
    let node = &p.node;
    p.network(
        "neta",
        vec![p.multimesh(json!({
            "delegates": [node.cluster_bridge(), node.macvlan()],
            "capture": {"backend": "nftables"},
        }))],
    );
    p.network(
        "netb",
        vec![p.multimesh(json!({
            "delegates": [node.second_bridge(), node.recorder("rec", json!({}))],
            "capture": {"backend": "nftables"},
        }))],
    );
    let rootfs = p.rootfs.display().to_string();
    let cg = p.cgroup_parent.clone();
    let o = p.cmd(&[
        "run",
        "-d",
        "--name",
        "two",
        "--network",
        "neta,netb",
        "--cgroup-parent",
        &cg,
        "--rootfs",
        &rootfs,
        "sleep",
        "600",
    ]);
    assert!(!o.status.success(), "{}", out_text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("net1 is already attached"), "{err}");
    let _ = p.cmd(&["rm", "-f", "-t", "0", "two"]);
    // Podman sets networks up in map order: whichever came second was
    // refused; the first one was torn down by podman's rollback.
    let adds = node
        .calls()
        .iter()
        .filter(|c| c["command"] == "ADD")
        .count();
    let dels = node
        .calls()
        .iter()
        .filter(|c| c["command"] == "DEL")
        .count();
    assert!(dels >= adds, "{:?}", node.calls());
    node.assert_no_leaks_within(Duration::from_secs(5));
}

/// Eight `podman run` at once on one multimesh network (podman's locking
/// and multimesh's per-container state side by side), then eight `podman
/// rm` at once: all succeed, distinct addresses, capture in each, nothing
/// left.
#[test]
fn eight_containers_started_and_removed_at_once() {
    const N: usize = 8;
    let p = Podman::new("pdmany");
    let node = &p.node;
    p.network(
        "mmnet",
        vec![p.multimesh(json!({
            "delegates": [node.cluster_bridge(), node.second_bridge()],
            "capture": {"backend": "iptables", "iptablesVariant": "nft"},
        }))],
    );
    let t = Instant::now();
    let runs: Vec<Vec<String>> = (0..N)
        .map(|i| p.run_args(&format!("c{i}"), "mmnet", &[]))
        .collect();
    let ids = p.all_at_once(&runs);
    let started = t.elapsed();
    let mut ips: Vec<String> = (0..N)
        .map(|i| {
            p.inspect(
                &format!("c{i}"),
                "{{.NetworkSettings.Networks.mmnet.IPAddress}}",
            )
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "{ips:?}");
    let sandboxes: Vec<String> = (0..N).map(|i| p.sandbox(&format!("c{i}"))).collect();
    for sb in &sandboxes {
        let r = ns_exec_ok(&ns_name(sb), "iptables-nft-save -t nat");
        assert!(
            r.contains("-A OUTPUT -p tcp -j MULTIMESH_OUTPUT"),
            "{sb}:\n{r}"
        );
    }
    let held: Vec<HeldNetns> = sandboxes.iter().map(|s| HeldNetns::open(s)).collect();
    let t = Instant::now();
    let rms: Vec<Vec<String>> = (0..N)
        .map(|i| {
            ["rm", "-f", "-t", "0", &format!("c{i}")]
                .map(String::from)
                .to_vec()
        })
        .collect();
    p.all_at_once(&rms);
    eprintln!(
        "[pdmany] {N} podman run at once: {:.1}s, {N} podman rm at once: {:.1}s",
        started.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    for (i, id) in ids.iter().enumerate() {
        assert_removed(&p, id, &sandboxes[i], &held[i]);
    }
}
