//! Test harness: a "node" network namespace per test, pod namespaces, and
//! the real multimesh binary run in the node netns the way a runtime runs
//! it. Everything a test creates is removed when its `Node` is dropped.
//!
//! Address plan (documentation ranges only):
//!   cluster bridge mm0   198.51.100.0/25   (gateway .1)   2001:db8:1::/64
//!   second bridge  mm1   198.51.100.128/25 (gateway .129)
//!   macvlan on veth mmv0 203.0.113.0/25    (node side mmv0p = .126)
#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod containerd;
pub mod cri;
pub mod k8s;
pub mod rand;
pub mod rtnl;

pub const BIN: &str = env!("CARGO_BIN_EXE_multimesh");
pub const RECORDER: &str = env!("CARGO_BIN_EXE_mm-recorder");
pub const PROBE: &str = env!("CARGO_BIN_EXE_mm-probe");
/// The benchmark's exec-hop floor (plugins/passthrough.rs).
pub const PASSTHROUGH: &str = env!("CARGO_BIN_EXE_mm-passthrough");
/// Debian's containernetworking-plugins.
pub const REF_PLUGINS: &str = "/usr/lib/cni";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn bin_dir() -> PathBuf {
    Path::new(RECORDER).parent().unwrap().to_path_buf()
}

/// Run a shell command; returns the output.
pub fn sh(cmd: &str) -> Output {
    Command::new("bash")
        .args(["-c", cmd])
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

/// Run a shell command that must succeed; returns stdout.
pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "command failed: {cmd}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub struct CniOut {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed (Null when empty).
    pub json: Value,
}

impl CniOut {
    /// Assert success and return the JSON.
    pub fn ok(&self) -> &Value {
        assert_eq!(
            self.code, 0,
            "CNI call failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.json
    }
    /// Assert a CNI error with `code` and return its message.
    pub fn err(&self, code: u64) -> String {
        assert_ne!(
            self.code, 0,
            "expected failure, got success: {}",
            self.stdout
        );
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "wrong error code\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.json["msg"].is_string(),
            "error without msg: {}",
            self.stdout
        );
        assert!(
            self.json["cniVersion"].is_string(),
            "error without cniVersion: {}",
            self.stdout
        );
        // Nothing but the error JSON on stdout.
        assert_eq!(
            self.stdout.trim().lines().count(),
            1,
            "stdout: {}",
            self.stdout
        );
        self.json["msg"].as_str().unwrap().to_string()
    }
}

/// Every ruleset a netns can hold, in one shell command (both iptables
/// variants, both families, nftables).
pub const EVERY_RULESET: &str = "iptables-legacy-save; ip6tables-legacy-save; \
     iptables-nft-save; ip6tables-nft-save; nft list ruleset";

/// Does `rules` (EVERY_RULESET's output) name multimesh anywhere?
pub fn mentions_multimesh(rules: &str) -> bool {
    rules.to_lowercase().contains("multimesh")
}

pub struct Pod {
    pub name: String,
    pub path: String,
}

impl Pod {
    pub fn exec(&self, cmd: &str) -> Output {
        ns_exec(&self.name, cmd)
    }
    pub fn exec_ok(&self, cmd: &str) -> String {
        ns_exec_ok(&self.name, cmd)
    }
    /// No trace of multimesh in the pod, whatever the tool.
    pub fn assert_no_capture(&self, ctx: &str) {
        let all = self.exec_ok(EVERY_RULESET);
        assert!(
            !mentions_multimesh(&all),
            "{ctx}: multimesh rules left in the pod:\n{all}"
        );
        // Nor the TPROXY policy routing (fwmark 0x539, table 133).
        let rules = self.exec_ok("ip -4 rule; ip -6 rule");
        let table = self.exec_ok(
            "ip -4 route show table all | grep -w 'table 133'; \
             ip -6 route show table all | grep -w 'table 133'; true",
        );
        assert!(
            !rules.contains("0x539") && !rules.contains("133") && table.trim().is_empty(),
            "{ctx}: TPROXY routing left in the pod:\n{rules}{table}"
        );
    }
    /// Interface names other than lo (over rtnetlink).
    pub fn links(&self) -> Vec<String> {
        rtnl::links(&self.path)
            .into_iter()
            .map(|l| l.name)
            .filter(|l| l != "lo")
            .collect()
    }
    /// IPv4/IPv6 global addresses of an interface, CIDR form (over
    /// rtnetlink).
    pub fn addrs(&self, ifname: &str) -> Vec<String> {
        rtnl::links(&self.path)
            .into_iter()
            .find(|l| l.name == ifname)
            .map(|l| l.addrs)
            .unwrap_or_default()
    }
}

/// Run a shell command inside netns `ns`.
pub fn ns_exec(ns: &str, cmd: &str) -> Output {
    sh(&format!("ip netns exec {ns} bash -c {}", shell_quote(cmd)))
}

/// Run a shell command inside netns `ns` that must succeed; returns stdout.
pub fn ns_exec_ok(ns: &str, cmd: &str) -> String {
    sh_ok(&format!("ip netns exec {ns} bash -c {}", shell_quote(cmd)))
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pods: std::cell::RefCell<Vec<String>>,
}

impl Node {
    /// A fresh node netns with the two bridges' gateways reachable and a
    /// veth pair (mmv0 for macvlan, mmv0p as the outside peer).
    pub fn new(tag: &str) -> Node {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mmn-{tag}-{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/mmtest/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["cni", "ipam", "conf", "leak"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        sh_ok(&format!("ip netns add {name}"));
        let node = Node {
            name,
            dir,
            pods: Default::default(),
        };
        node.exec_ok(
            "ip link set lo up && ip link add mmv0 type veth peer name mmv0p && \
             ip link set mmv0 up && ip link set mmv0p up && \
             ip addr add 203.0.113.126/25 dev mmv0p",
        );
        node
    }

    pub fn exec(&self, cmd: &str) -> Output {
        ns_exec(&self.name, cmd)
    }
    pub fn exec_ok(&self, cmd: &str) -> String {
        ns_exec_ok(&self.name, cmd)
    }

    pub fn pod(&self, tag: &str) -> Pod {
        let name = format!("{}-{tag}", self.name);
        sh_ok(&format!(
            "ip netns add {name} && ip netns exec {name} ip link set lo up"
        ));
        self.pods.borrow_mut().push(name.clone());
        Pod {
            path: format!("/run/netns/{name}"),
            name,
        }
    }

    pub fn remove_pod_netns(&self, pod: &Pod) {
        sh(&format!("ip netns del {}", pod.name));
    }

    pub fn cni_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
    pub fn record_file(&self) -> PathBuf {
        self.dir.join("calls.jsonl")
    }

    /// A bridge delegate with host-local IPAM in this test's data dir.
    pub fn bridge(&self, net: &str, bridge: &str, subnet: &str, gw: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": net, "type": "bridge", "bridge": bridge,
            "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": self.dir.join("ipam").display().to_string(),
                     "ranges": [[{"subnet": subnet, "gateway": gw}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}
        })
    }
    pub fn cluster_bridge(&self) -> Value {
        self.bridge("cluster", "mm0", "198.51.100.0/25", "198.51.100.1")
    }
    pub fn second_bridge(&self) -> Value {
        let mut b = self.bridge("second", "mm1", "198.51.100.128/25", "198.51.100.129");
        b["ipam"]["routes"] = json!([]);
        b
    }
    pub fn dual_stack_bridge(&self) -> Value {
        let mut b = self.cluster_bridge();
        b["ipam"]["ranges"] = json!([
            [{"subnet": "198.51.100.0/25", "gateway": "198.51.100.1"}],
            [{"subnet": "2001:db8:1::/64", "gateway": "2001:db8:1::1"}]
        ]);
        b["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
        b
    }
    pub fn macvlan(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "mvnet", "type": "macvlan", "master": "mmv0", "mode": "bridge",
            "ipam": {"type": "host-local", "dataDir": self.dir.join("ipam").display().to_string(),
                     "ranges": [[{"subnet": "203.0.113.0/25"}]]}
        })
    }
    /// The in-repo recorder plugin; `extra` is merged in.
    pub fn recorder(&self, name: &str, extra: Value) -> Value {
        let mut v = json!({
            "cniVersion": "1.0.0", "name": name, "type": "mm-recorder",
            "recordFile": self.record_file().display().to_string(),
            "leakDir": self.dir.join("leak").display().to_string(),
        });
        if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
            m.extend(e);
        }
        v
    }

    /// A multimesh meta-plugin config with this node's dirs.
    pub fn meta(&self, delegates: Vec<Value>, capture: Value) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "multimesh-net", "type": "multimesh",
            "delegates": delegates,
            "cniDir": self.cni_dir().display().to_string(),
            "binDir": bin_dir().display().to_string(),
            "confDir": self.dir.join("conf").display().to_string(),
            "logLevel": "debug",
            "capture": capture,
        })
    }

    /// Run multimesh in the node netns as a runtime would.
    pub fn cni(&self, cmd: &str, conf: &Value, netns: &str, cid: &str, ifname: &str) -> CniOut {
        self.cni_env(cmd, conf, netns, cid, ifname, &[])
    }

    pub fn cni_env(
        &self,
        cmd: &str,
        conf: &Value,
        netns: &str,
        cid: &str,
        ifname: &str,
        extra: &[(&str, &str)],
    ) -> CniOut {
        self.run_plugin(BIN, cmd, conf, netns, cid, ifname, extra)
    }

    /// Run any CNI plugin `bin` in the node netns with the standard CNI
    /// environment plus `extra` (an empty CNI_* value removes that variable).
    #[allow(clippy::too_many_arguments)]
    pub fn run_plugin(
        &self,
        bin: &str,
        cmd: &str,
        conf: &Value,
        netns: &str,
        cid: &str,
        ifname: &str,
        extra: &[(&str, &str)],
    ) -> CniOut {
        let mut env: Vec<(String, String)> = vec![
            ("CNI_COMMAND".into(), cmd.into()),
            ("CNI_CONTAINERID".into(), cid.into()),
            ("CNI_NETNS".into(), netns.into()),
            ("CNI_IFNAME".into(), ifname.into()),
            ("CNI_PATH".into(), REF_PLUGINS.into()),
            (
                "CNI_ARGS".into(),
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test".into(),
            ),
            ("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ];
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            if !v.is_empty() || !k.starts_with("CNI_") {
                env.push((k.to_string(), v.to_string()));
            }
        }
        run_in(&self.name, bin, &env, &serde_json::to_vec(conf).unwrap())
    }

    /// Everything a test could leak: multimesh state, IPAM allocations,
    /// recorder markers, host-side veths.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in walk(&self.cni_dir()) {
            // Node-wide files that stay: the variant cache, the
            // directory of netns capture owners (its markers are leaks)
            // and the agent's CNI call journal.
            if !e.ends_with("iptables-variant")
                && !e.ends_with("/cni/netns/")
                && !e.contains("/cni/journal/")
            {
                out.push(format!("state: {e}"));
            }
        }
        for e in walk(&self.dir.join("ipam")) {
            let f = Path::new(&e)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .to_string();
            if f.parse::<std::net::IpAddr>().is_ok() {
                out.push(format!("ipam: {e}"));
            }
        }
        for e in walk(&self.dir.join("leak")) {
            out.push(format!("delegate still attached: {e}"));
        }
        let links = self.exec_ok("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1");
        for l in links.lines() {
            if l.starts_with("veth") {
                out.push(format!("host veth: {l}"));
            }
        }
        out
    }

    /// For leaks the kernel clears asynchronously (a deleted netns takes
    /// its veth peers with it in a background cleanup): retry, bounded.
    pub fn assert_no_leaks_within(&self, timeout: Duration) {
        let start = Instant::now();
        while !self.leaks().is_empty() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.assert_no_leaks();
    }

    pub fn assert_no_leaks(&self) {
        let l = self.leaks();
        assert!(l.is_empty(), "leaked: {l:#?}");
    }

    /// The recorder's calls as "COMMAND ifname".
    pub fn call_list(&self) -> Vec<String> {
        self.calls()
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c["command"].as_str().unwrap_or(""),
                    c["ifname"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Recorded plugin calls.
    pub fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.record_file())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for p in self.pods.borrow().iter() {
            sh(&format!("ip netns del {p} 2>/dev/null"));
        }
        sh(&format!("ip netns del {} 2>/dev/null", self.name));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(format!("{}/", p.display()));
                out.extend(walk(&p));
            } else if !p.ends_with("lock") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// Run `bin` in netns `ns` with exactly `env`, feeding `stdin`, with a timeout.
pub fn run_in(ns: &str, bin: &str, env: &[(String, String)], stdin: &[u8]) -> CniOut {
    finish(spawn_in(ns, bin, env, stdin), Duration::from_secs(120))
}

pub fn wait_output(child: std::process::Child, timeout: Duration) -> Output {
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if d2.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !d2.load(Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    out
}

/// A background listener (mm-probe listen) in a netns; waits for "ready".
pub struct Listener {
    child: Option<std::process::Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Listener {
    pub fn start(ns: &str, port: u16, udp: bool, count: usize) -> Listener {
        Listener::start_with(ns, port, udp, count, &[])
    }
    /// A listener with more probe options (`--transparent`, `--uid U`, ...).
    pub fn start_with(ns: &str, port: u16, udp: bool, count: usize, extra: &[&str]) -> Listener {
        use std::io::BufRead;
        let mut args = vec![
            "netns".to_string(),
            "exec".into(),
            ns.into(),
            PROBE.into(),
            "listen".into(),
            "--port".into(),
            port.to_string(),
            "--count".into(),
            count.to_string(),
            "--timeout".into(),
            "20".into(),
        ];
        if udp {
            args.push("--udp".into());
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn probe");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("listener ready");
        assert_eq!(first, "ready");
        Listener {
            child: Some(child),
            lines: rx,
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        while self.lines.try_recv().is_ok() {}
    }
}

/// Connect from netns `ns` (as `uid` when given); returns the answer line
/// ("served_by=P orig=A peer=B") or the error text.
pub fn connect(
    ns: &str,
    addr: &str,
    port: u16,
    udp: bool,
    uid: Option<u32>,
) -> Result<String, String> {
    let mut cmd =
        format!("ip netns exec {ns} {PROBE} connect --addr {addr} --port {port} --timeout 5");
    if udp {
        cmd.push_str(" --udp");
    }
    if let Some(u) = uid {
        cmd.push_str(&format!(" --uid {u} --gid {u}"));
    }
    let o = sh(&cmd);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// The value of `key=` in a probe answer line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

/// Turn off IPv6 duplicate address detection in a netns (its interfaces
/// created afterwards inherit it), so addresses are usable at once.
pub fn no_dad(ns: &str) {
    sh_ok(&format!(
        "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0"
    ));
}

/// Wait (bounded) until no IPv6 address on `dev` in `ns` is tentative.
pub fn wait_v6_ready(ns: &str, dev: &str) {
    let start = Instant::now();
    loop {
        let t = sh_ok(&format!(
            "ip netns exec {ns} ip -6 -o addr show dev {dev} tentative"
        ));
        if t.trim().is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{ns}: addresses still tentative:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The environment a runtime gives one CNI call (as `Node::cni` uses).
pub fn cni_env(cmd: &str, netns: &str, cid: &str, ifname: &str) -> Vec<(String, String)> {
    [
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", cid),
        ("CNI_NETNS", netns),
        ("CNI_IFNAME", ifname),
        ("CNI_PATH", REF_PLUGINS),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test",
        ),
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Start `bin` in netns `ns` with exactly `env`, its stdin written and
/// closed; the caller waits (`finish`). For concurrent calls and for
/// killing a call midway.
pub fn spawn_in(
    ns: &str,
    bin: &str,
    env: &[(String, String)],
    stdin: &[u8],
) -> std::process::Child {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, bin])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn CNI call");
    // Configs are far smaller than a pipe buffer: this never blocks.
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child
}

/// Wait for a spawned call (bounded) and parse its output.
pub fn finish(child: std::process::Child, timeout: Duration) -> CniOut {
    let out = wait_output(child, timeout);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    CniOut {
        code: out.status.code().unwrap_or(-1),
        json: serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One call for `run_concurrently`: binary, environment, stdin.
pub type CallSpec = (String, Vec<(String, String)>, Vec<u8>);

/// Run many CNI calls at once, as kubelet does for pods starting together:
/// every process is spawned before any is waited for. Returns the outputs
/// (in order) and the wall time from the first spawn to the last exit.
pub fn run_concurrently(ns: &str, calls: &[CallSpec]) -> (Vec<CniOut>, Duration) {
    let start = Instant::now();
    let children: Vec<_> = calls
        .iter()
        .map(|(bin, env, stdin)| spawn_in(ns, bin, env, stdin))
        .collect();
    let deadline = start + Duration::from_secs(300);
    let outs = children
        .into_iter()
        .map(|c| finish(c, deadline.saturating_duration_since(Instant::now())))
        .collect();
    (outs, start.elapsed())
}

/// Is `pid` gone (or a zombie waiting for init)?
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
    }
}

/// Keeps a netns alive after its owner removed it (an open fd on the nsfs
/// file), so a test can show DEL removed the rules and interfaces rather
/// than the kernel destroying the namespace with them.
pub struct HeldNetns(std::fs::File);

impl HeldNetns {
    pub fn open(path: &str) -> HeldNetns {
        HeldNetns(std::fs::File::open(path).expect("open the netns"))
    }
    pub fn exec(&self, cmd: &str) -> String {
        use std::os::fd::AsRawFd;
        sh_ok(&format!(
            "nsenter --net=/proc/{}/fd/{} sh -c {}",
            std::process::id(),
            self.0.as_raw_fd(),
            shell_quote(cmd)
        ))
    }
}

/// Remove the (empty) cgroups a runtime left under `parent` in every
/// controller hierarchy, deepest first.
pub fn remove_cgroups(parent: &str) {
    for ctl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = ctl.path().join(parent.trim_start_matches('/'));
        if top.exists() {
            sh(&format!(
                "find {} -depth -type d -exec rmdir {{}} + 2>/dev/null",
                top.display()
            ));
        }
    }
}
