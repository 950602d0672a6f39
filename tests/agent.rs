//! `multimesh agent` end to end, as root: the real binary in a node netns
//! (and a PID namespace of its own, so the process namespaces it searches
//! are this test's), the fake API server beside it, pods whose netns were
//! set up by the bridge reference plugin alone (multimesh not installed
//! yet), real capture and real TCP.

mod common;

use common::k8s::{istio_status, ApiServer};
use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = "node-1";
const LISTEN: &str = "127.0.0.1:9190";
const OUT_PORT: u16 = 15001;

fn tag(t: &str) -> String {
    format!("ag{t}")
}

/// Wait until `f` gives Some (bounded), polling every 50 ms.
fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A test node with the agent's files: the primary network config, a
/// service account, a netns directory of bind mounts.
struct Setup {
    node: Node,
    api: ApiServer,
    netns_dir: PathBuf,
    mounts: std::cell::RefCell<Vec<PathBuf>>,
}

impl Setup {
    fn new(t: &str) -> Setup {
        let node = Node::new(&tag(t));
        let api = ApiServer::start_in(&node.name);
        let primary = json!({"cniVersion": "1.0.0", "name": "cluster",
            "plugins": [node.cluster_bridge()]});
        std::fs::create_dir_all(node.dir.join("net.d")).unwrap();
        std::fs::write(
            node.dir.join("net.d/10-bridge.conflist"),
            serde_json::to_vec_pretty(&primary).unwrap(),
        )
        .unwrap();
        let sa = node.dir.join("sa");
        std::fs::create_dir_all(&sa).unwrap();
        std::fs::write(sa.join("token"), &api.token).unwrap();
        std::fs::copy(api.ca_pem(), sa.join("ca.crt")).unwrap();
        // A shared mount, as /run/netns is: bind mounts made and removed
        // in it later reach the agent's (slave) mount namespace.
        let netns_dir = node.dir.join("netns");
        std::fs::create_dir_all(&netns_dir).unwrap();
        let d = netns_dir.display();
        sh_ok(&format!("mount --bind {d} {d} && mount --make-shared {d}"));
        api.put_node(&json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": NODE, "resourceVersion": "1"},
            "spec": {"taints": [
                {"key": "node.example/other", "effect": "NoExecute"},
                {"key": "multimesh.io/not-ready", "effect": "NoSchedule"}]}}));
        Setup {
            node,
            api,
            netns_dir,
            mounts: Default::default(),
        }
    }

    /// A pod netns with eth0 from the bridge plugin alone (as before
    /// multimesh was installed): its IP.
    fn bare_pod(&self, pod: &Pod, cid: &str) -> String {
        let out = self.node.run_plugin(
            &format!("{REF_PLUGINS}/bridge"),
            "ADD",
            &self.node.cluster_bridge(),
            &pod.path,
            cid,
            "eth0",
            &[],
        );
        let ip = out.ok()["ips"][0]["address"].as_str().unwrap().to_string();
        ip.split('/').next().unwrap().to_string()
    }

    /// Bind-mount the pod's netns into the agent's --netns-dir.
    /// `n` pods named `<prefix>0…`, each set up by the bridge alone (no
    /// multimesh) and bind-mounted in the netns dir; their pods and IPs.
    fn mounted_bare_pods(&self, prefix: &str, n: usize) -> (Vec<Pod>, Vec<String>) {
        let pods: Vec<Pod> = (0..n)
            .map(|i| self.node.pod(&format!("{prefix}{i}")))
            .collect();
        let ips = pods
            .iter()
            .enumerate()
            .map(|(i, p)| self.bare_pod(p, &format!("cid-{i}")))
            .collect();
        for p in &pods {
            self.mount(p);
        }
        (pods, ips)
    }

    fn mount(&self, pod: &Pod) {
        let target = self.netns_dir.join(&pod.name);
        std::fs::write(&target, "").unwrap();
        sh_ok(&format!("mount --bind {} {}", pod.path, target.display()));
        self.mounts.borrow_mut().push(target);
    }

    /// The pod object: meshed (istio), running with `ip`.
    fn put_meshed(&self, name: &str, ip: &str, phase: &str) -> Value {
        self.put_meshed_by("istio", name, ip, phase)
    }

    /// The pod object, meshed by `profile` (istio or linkerd).
    fn put_meshed_by(&self, profile: &str, name: &str, ip: &str, phase: &str) -> Value {
        let (ann, proxy) = match profile {
            "istio" => (istio_status(), "istio-proxy"),
            _ => (
                json!({"linkerd.io/proxy-version": "stable-2.14.10"}),
                "linkerd-proxy",
            ),
        };
        let mut p = ApiServer::pod_json(
            "shop",
            name,
            &format!("uid-{name}"),
            ann,
            &["app", proxy],
            &["multimesh-validation"],
        );
        p["spec"]["nodeName"] = json!(NODE);
        p["status"] = json!({"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]});
        self.api.put_pod(&p);
        p
    }

    fn agent(&self, extra: &[&str], pre: &str) -> Agent {
        Agent::start(self, extra, pre)
    }

    /// The installed plugin config, as the runtime hands it over.
    fn installed_conf(&self) -> Value {
        let list: Value = serde_json::from_slice(
            &std::fs::read(self.node.dir.join("net.d/00-multimesh.conflist")).unwrap(),
        )
        .unwrap();
        let mut c = list["plugins"][0].clone();
        c["name"] = list["name"].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        c
    }

    fn repair_records(&self) -> Vec<String> {
        walk(&self.node.cni_dir())
            .into_iter()
            .filter(|e| e.contains("/repair-"))
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        for m in self.mounts.borrow().iter() {
            sh(&format!("umount {}", m.display()));
        }
        sh(&format!("umount {}", self.netns_dir.display()));
    }
}

struct Agent {
    child: Option<Child>,
    node: String,
    log: PathBuf,
}

impl Agent {
    fn start(s: &Setup, extra: &[&str], pre: &str) -> Agent {
        let d = &s.node.dir;
        let mut args: Vec<String> = vec![
            "agent".into(),
            format!("--listen={LISTEN}"),
            format!("--node-name={NODE}"),
            format!("--kubeconfig={}", s.api.kubeconfig_token().display()),
            format!("--netns-dir={}", s.netns_dir.display()),
            format!("--api-server={}", s.api.url),
            format!("--bin-dir={}", d.join("bin").display()),
            format!("--cni-conf-dir={}", d.join("net.d").display()),
            format!("--multimesh-conf-dir={}", d.join("mm").display()),
            format!("--service-account-dir={}", d.join("sa").display()),
            format!("--state-dir={}", s.node.cni_dir().display()),
        ];
        if !extra.iter().any(|a| a.starts_with("--bin-src")) {
            args.push(format!("--bin-src={BIN}"));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        // The agent's executable: this build's, or another (a release
        // build, to measure it) from MULTIMESH_AGENT_BIN.
        let exe = std::env::var("MULTIMESH_AGENT_BIN").unwrap_or_else(|_| BIN.to_string());
        let cmd: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let log = d.join(format!("agent-{}.log", Instant::now().elapsed().as_nanos()));
        let logf = std::fs::File::create(&log).unwrap();
        // Its own PID namespace (and /proc): the processes it searches are
        // this test's; it is PID 1 there, so its end ends them too.
        let child = Command::new("ip")
            .args(["netns", "exec", &s.node.name, "unshare", "--pid", "--fork"])
            .args([
                "--mount-proc",
                "--propagation=slave",
                "--kill-child=SIGTERM",
            ])
            .args(["bash", "-c"])
            .arg(format!("{pre} exec {exe} {}", cmd.join(" ")))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn the agent");
        let a = Agent {
            child: Some(child),
            node: s.node.name.clone(),
            log,
        };
        wait_for(Duration::from_secs(20), "the agent to listen", || {
            (a.get("/healthz").0 == 200).then_some(())
        });
        a
    }

    /// (HTTP status, body) of GET `path` (curl in the node netns).
    fn get(&self, path: &str) -> (u16, String) {
        let o = ns_exec(
            &self.node,
            &format!("curl -s --max-time 5 -w '\\n%{{http_code}}' http://{LISTEN}{path}"),
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// /metrics through prometheus_client's OpenMetrics parser.
    fn metrics(&self) -> Vec<Value> {
        let (code, text) = self.get("/metrics");
        assert_eq!(code, 200, "{text}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parse_metrics.py");
        let mut c = Command::new("/opt/multimesh-venv/bin/python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the venv's python (scripts/deps.sh)");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let o = wait_output(c, Duration::from_secs(30));
        assert!(
            o.status.success(),
            "the exposition does not parse: {}\n{text}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The agent's PID (here): the child of `unshare`, our child.
    fn pid(&self) -> Option<u32> {
        let u = self.child.as_ref()?.id();
        std::fs::read_to_string(format!("/proc/{u}/task/{u}/children"))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// SIGTERM to the agent (unshare then exits too, and the agent's PID
    /// namespace ends with it), bounded; SIGKILL after that.
    fn stop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- agent log:\n{}", self.log());
        }
    }
}

/// The value of the sample `name` with exactly `labels` (0 when absent).
fn sample(m: &[Value], name: &str, labels: Value) -> f64 {
    m.iter()
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
        .unwrap_or(0.0)
}

fn events_for(api: &ApiServer, pod: &str) -> Vec<Value> {
    api.events()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == pod)
        .collect()
}

/// TCP from the pod's app to a TEST-NET address: the answer line, or the
/// error.
fn outbound(pod: &Pod) -> Result<String, String> {
    connect(&pod.name, "203.0.113.200", 443, false, None)
}

/// Repair mode: the taint goes once ready; a meshed pod started before the
/// install is repaired in place within seconds (its netns found by its IP
/// among the bind mounts, another's among the processes), real TCP then
/// lands on the outbound port; Events and metrics; never touched twice;
/// the pod's DEL leaves nothing.
#[test]
fn repair_mode_repairs_in_place() {
    let s = Setup::new("rep");
    let a_pod = s.node.pod("a");
    let b_pod = s.node.pod("b");
    let a_ip = s.bare_pod(&a_pod, "cid-a");
    let b_ip = s.bare_pod(&b_pod, "cid-b");
    s.mount(&a_pod);
    // No capture yet: the app's TCP goes nowhere near a proxy port.
    let proxy_a = Listener::start(&a_pod.name, OUT_PORT, false, 1);
    let before = outbound(&a_pod);
    assert!(
        before
            .as_ref()
            .map_or(true, |l| field(l, "served_by") != "15001"),
        "{before:?}"
    );
    // Pod b's netns is reachable only through a process in it.
    let sleeper = format!("ip netns exec {} sleep 600 &", b_pod.name);
    let mut agent = s.agent(&[], &sleeper);
    wait_for(Duration::from_secs(15), "ready", || {
        (agent.get("/readyz").0 == 200).then_some(())
    });
    // Taint removed, the other kept.
    wait_for(Duration::from_secs(10), "the taint to go", || {
        let t = s.api.node(NODE)["spec"]["taints"].clone();
        (t == json!([{"key": "node.example/other", "effect": "NoExecute"}])).then_some(())
    });
    assert!(s.node.dir.join("net.d/00-multimesh.conflist").exists());

    let t0 = Instant::now();
    s.put_meshed("a", &a_ip, "Running");
    s.put_meshed("b", &b_ip, "Running");
    let (took, line) = wait_for(Duration::from_secs(10), "pod a's repair", || {
        outbound(&a_pod)
            .ok()
            .filter(|l| field(l, "served_by") == "15001")
            .map(|l| (t0.elapsed(), l))
    });
    println!("time from pod creation to repair: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(field(&line, "orig"), "203.0.113.200:443");
    let proxy_b = Listener::start(&b_pod.name, OUT_PORT, false, 1);
    let l = wait_for(Duration::from_secs(10), "pod b's repair", || {
        outbound(&b_pod)
            .ok()
            .filter(|l| field(l, "served_by") == "15001")
    });
    assert_eq!(field(&l, "orig"), "203.0.113.200:443");
    // The proxy's own traffic is not captured (the same rules ADD writes).
    let proxy2 = Listener::start(&a_pod.name, OUT_PORT, false, 1);
    assert!(connect(&a_pod.name, "203.0.113.200", 443, false, Some(1337)).is_err());
    drop(proxy2);

    for p in ["a", "b"] {
        let ev = events_for(&s.api, p);
        assert_eq!(ev.len(), 1, "{ev:#?}");
        assert_eq!(ev[0]["reason"], "MultimeshRepaired");
        assert_eq!(ev[0]["type"], "Normal");
        assert_eq!(ev[0]["involvedObject"]["uid"], format!("uid-{p}"));
        assert_eq!(ev[0]["source"]["host"], NODE);
    }
    assert_eq!(s.repair_records().len(), 4, "{:?}", s.repair_records()); // 2 dirs, 2 records

    // CNI calls through the installed config are counted: a DEL of
    // nothing and a failing ADD (no such netns: 105).
    let conf = s.installed_conf();
    s.node.cni("DEL", &conf, "", "cid-s", "eth0").ok();
    s.node
        .cni("ADD", &conf, "/run/netns/mm-nope", "cid-x", "eth0")
        .err(105);
    // A call the environment already refuses (no CNI_CONTAINERID: 4).
    s.node
        .cni_env(
            "ADD",
            &conf,
            &a_pod.path,
            "",
            "eth0",
            &[("CNI_CONTAINERID", "")],
        )
        .err(4);
    let m = wait_for(Duration::from_secs(10), "the CNI calls in /metrics", || {
        let m = agent.metrics();
        let adds = sample(
            &m,
            "multimesh_cni_call_duration_seconds_count",
            json!({"command": "ADD"}),
        );
        (adds == 2.0).then_some(m)
    });
    for code in ["105", "4"] {
        assert_eq!(
            sample(
                &m,
                "multimesh_cni_calls_total",
                json!({"command": "ADD", "code": code})
            ),
            1.0,
            "ADD {code}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "multimesh_cni_calls_total",
            json!({"command": "DEL", "code": "0"})
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "repair", "outcome": "repaired"})
        ),
        2.0
    );
    assert_eq!(sample(&m, "multimesh_pods_watched", json!({})), 2.0);
    assert_eq!(sample(&m, "multimesh_installed", json!({})), 1.0);

    // Never touched twice: a change of the pod is seen, nothing is done.
    let mut p = s.api.pod("shop", "a");
    p["metadata"]["labels"]["touched"] = json!("yes");
    s.api.put_pod(&p);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(events_for(&s.api, "a").len(), 1);
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "repair", "outcome": "repaired"})
        ),
        2.0
    );
    agent.stop();
    assert!(agent.log().contains("repaired"), "{}", agent.log());
    drop((proxy_a, proxy_b));

    // The pods' DEL (the runtime's, through the installed multimesh, which
    // has no record of these containers): capture, repair records and IPs
    // all go; the interfaces go with the netns, which the runtime removes.
    for (pod, cid) in [(&a_pod, "cid-a"), (&b_pod, "cid-b")] {
        s.node.cni("DEL", &conf, &pod.path, cid, "eth0").ok();
        pod.assert_no_capture("after DEL");
    }
    assert!(s.repair_records().is_empty(), "{:?}", s.repair_records());
    for m in s.mounts.borrow_mut().drain(..) {
        sh_ok(&format!("umount {}", m.display()));
    }
    s.node.remove_pod_netns(&a_pod);
    s.node.remove_pod_netns(&b_pod);
    s.node.assert_no_leaks_within(Duration::from_secs(5));
}

/// Label mode labels a running meshed pod without capture, and a pod whose
/// validator exited 95 (no netns needed for that one); delete mode deletes
/// them. Each action has its Event; capture is never programmed.
#[test]
fn label_and_delete_modes() {
    let s = Setup::new("lab");
    let a_pod = s.node.pod("a");
    let a_ip = s.bare_pod(&a_pod, "cid-a");
    s.mount(&a_pod);
    let mut agent = s.agent(&["--repair-mode=label"], "");
    wait_for(Duration::from_secs(15), "ready", || {
        (agent.get("/readyz").0 == 200).then_some(())
    });
    // A pod object that does not read as a pod (wrong types everywhere)
    // is skipped; the others are handled.
    let mut odd = s.put_meshed("odd", "198.51.100.98", "Running");
    odd["metadata"]["labels"] = json!({"x": 5});
    odd["spec"]["containers"] = json!("nope");
    odd["status"]["podIPs"] = json!([{"ip": ["198.51.100.98"]}]);
    s.api.put_pod(&odd);
    s.put_meshed("a", &a_ip, "Running");
    // The validator's verdict alone: its pod's IP is in no netns here.
    let mut v = s.put_meshed("v", "198.51.100.99", "Pending");
    v["status"]["initContainerStatuses"] = json!([{"name": "multimesh-validation",
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 95}}}]);
    s.api.put_pod(&v);
    for p in ["a", "v"] {
        wait_for(Duration::from_secs(10), "the label", || {
            (s.api.pod("shop", p)["metadata"]["labels"]["multimesh.io/uninitialized"] == "true")
                .then_some(())
        });
        let ev = wait_for(Duration::from_secs(5), "the event", || {
            let e = events_for(&s.api, p);
            (!e.is_empty()).then_some(e)
        });
        assert_eq!(ev[0]["reason"], "MultimeshUninitialized");
    }
    a_pod.assert_no_capture("label mode");
    assert!(events_for(&s.api, "odd").is_empty());
    assert_eq!(agent.get("/healthz").0, 200);
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "label", "outcome": "labelled"})
        ),
        2.0
    );
    agent.stop();

    // Delete mode, on fresh pod objects.
    for p in ["a", "v", "odd"] {
        s.api.remove_pod("shop", p);
    }
    let ev_before = s.api.events().len();
    let mut agent = s.agent(&["--repair-mode", "delete"], "");
    s.put_meshed("a", &a_ip, "Running");
    s.api.put_pod(&{
        let mut v = v.clone();
        v["metadata"]["labels"] = json!({"app": "v"});
        v
    });
    for p in ["a", "v"] {
        wait_for(
            Duration::from_secs(20),
            &format!("pod {p}'s deletion"),
            || (!s.api.has_pod("shop", p)).then_some(()),
        );
    }
    let all = s.api.events();
    assert_eq!(all.len(), ev_before + 2, "{all:#?}");
    let deleted: Vec<&Value> = all
        .iter()
        .filter(|e| e["reason"] == "MultimeshDeleted")
        .collect();
    assert_eq!(deleted.len(), 2, "{all:#?}");
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "delete", "outcome": "deleted"})
        ),
        2.0
    );
    // Gone from the API: no longer watched.
    wait_for(Duration::from_secs(10), "no pod watched", || {
        (sample(&agent.metrics(), "multimesh_pods_watched", json!({})) == 0.0).then_some(())
    });
    a_pod.assert_no_capture("delete mode");
    agent.stop();
}

/// The agent survives its watch expiring (410: relist) and the API server
/// restarting (connection refused, then a relist): pods created after each
/// are still repaired, and /readyz comes back. The linkerd profile and the
/// nftables backend: repaired TCP lands on linkerd's outbound port.
#[test]
fn survives_watch_expiry_and_api_restart() {
    let mut s = Setup::new("res");
    let (pods, ips) = s.mounted_bare_pods("p", 3);
    let agent = s.agent(
        &["--capture-backend=nftables", "--capture-profile=linkerd"],
        "",
    );
    wait_for(Duration::from_secs(15), "ready", || {
        (agent.get("/readyz").0 == 200).then_some(())
    });
    const LINKERD_OUT: u16 = 4140;
    let repaired = |i: usize| {
        let _l = Listener::start(&pods[i].name, LINKERD_OUT, false, 1);
        let l = wait_for(
            Duration::from_secs(15),
            &format!("pod p{i}'s repair"),
            || {
                outbound(&pods[i])
                    .ok()
                    .filter(|l| field(l, "served_by") == LINKERD_OUT.to_string())
            },
        );
        assert_eq!(field(&l, "orig"), "203.0.113.200:443");
    };
    s.put_meshed_by("linkerd", "p0", &ips[0], "Running");
    repaired(0);

    // The watch expires: the agent relists and goes on.
    s.api.set_faults(json!({"expire_watches": 1}));
    wait_for(Duration::from_secs(10), "the expiry", || {
        (s.api.faults()["expire_watches"] == 0).then_some(())
    });
    s.put_meshed_by("linkerd", "p1", &ips[1], "Running");
    repaired(1);
    let m = agent.metrics();
    assert!(
        sample(
            &m,
            "multimesh_watch_restarts_total",
            json!({"reason": "expired"})
        ) >= 1.0
    );

    // The API server restarts (its history gone: the old version is 410).
    s.api.restart();
    s.put_meshed_by("linkerd", "p2", &ips[2], "Running");
    repaired(2);
    wait_for(Duration::from_secs(30), "ready again", || {
        (agent.get("/readyz").0 == 200).then_some(())
    });
    // A pod gone from the API server whose namespace is still there keeps
    // its capture (its DEL removes it); once the namespace is gone too
    // (a DEL that came without a netns), the agent drops the record.
    s.api.remove_pod("shop", "p2");
    std::thread::sleep(Duration::from_secs(2));
    assert!(pods[2].exec_ok("nft list tables").contains("multimesh"));
    assert_eq!(s.repair_records().len(), 6, "{:?}", s.repair_records());
    let gone_mount = s.mounts.borrow_mut().pop().unwrap();
    sh_ok(&format!("umount {}", gone_mount.display()));
    s.node.remove_pod_netns(&pods[2]);
    wait_for(
        Duration::from_secs(30),
        "the gone pod's record dropped",
        || (s.repair_records().len() == 4).then_some(()),
    );
    // Each pod once.
    for p in ["p0", "p1", "p2"] {
        assert_eq!(events_for(&s.api, p).len(), 1, "{p}");
    }
    let m = agent.metrics();
    assert_eq!(
        sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "repair", "outcome": "repaired"})
        ),
        3.0
    );
    // nftables: the table DEL removes.
    let conf = s.installed_conf();
    for (i, p) in pods.iter().enumerate().take(2) {
        assert!(p.exec_ok("nft list tables").contains("multimesh"));
        s.node
            .cni("DEL", &conf, &p.path, &format!("cid-{i}"), "eth0")
            .ok();
        p.assert_no_capture("after DEL");
    }
    assert!(s.repair_records().is_empty());
}

/// A linkerd pod that sets no `config.linkerd.io/*` of its own is repaired
/// with its namespace's, as ADD programs it: the namespace skips outbound
/// port 443, so after the repair port 80 lands on linkerd's outbound port
/// and 443 does not. The namespace is read once for two such pods. A node
/// with more than 1024 taints (`MAX_TAINTS`) is not patched: the agent is
/// ready, the taint stays, the refusal is logged.
#[test]
fn linkerd_namespace_config_in_repairs() {
    let s = Setup::new("lns");
    let mut taints: Vec<Value> = (0..1024)
        .map(|i| json!({"key": format!("example.com/t{i}"), "effect": "NoSchedule"}))
        .collect();
    taints.push(json!({"key": "multimesh.io/not-ready", "effect": "NoSchedule"}));
    s.api.put_node(&json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "resourceVersion": "1"},
        "spec": {"taints": taints}}));
    s.api.put_namespace(
        "shop",
        json!({"config.linkerd.io/skip-outbound-ports": "443"}),
    );
    let (pods, ips) = s.mounted_bare_pods("n", 2);
    let agent = s.agent(&["--capture-profile=linkerd"], "");
    wait_for(Duration::from_secs(15), "ready", || {
        (agent.get("/readyz").0 == 200).then_some(())
    });
    s.api.clear_requests();
    const LINKERD_OUT: u16 = 4140;
    for (i, p) in pods.iter().enumerate() {
        s.put_meshed_by("linkerd", &p.name, &ips[i], "Running");
    }
    for p in &pods {
        let _l = Listener::start(&p.name, LINKERD_OUT, false, 2);
        let l = wait_for(
            Duration::from_secs(15),
            &format!("pod {}'s repair", p.name),
            || {
                connect(&p.name, "203.0.113.200", 80, false, None)
                    .ok()
                    .filter(|l| field(l, "served_by") == LINKERD_OUT.to_string())
            },
        );
        assert_eq!(field(&l, "orig"), "203.0.113.200:80");
        // The namespace's skip-outbound-ports: 443 is not redirected.
        // (Unredirected, it reaches no one: an error, or another answer.)
        if let Ok(l) = connect(&p.name, "203.0.113.200", 443, false, None) {
            assert_ne!(field(&l, "served_by"), LINKERD_OUT.to_string(), "{l}");
        }
    }
    let ns_reads = s
        .api
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "GET" && r["path"] == "/api/v1/namespaces/shop")
        .count();
    assert_eq!(ns_reads, 1, "{:?}", s.api.requests());
    // The taint stays: more than 1024 taints are not looked through.
    let t = s.api.node(NODE)["spec"]["taints"].clone();
    assert_eq!(t.as_array().unwrap().len(), 1025);
    wait_for(Duration::from_secs(10), "the refusal logged", || {
        agent.log().contains("more than 1024 taints").then_some(())
    });
}

/// `(VmRSS, VmHWM)` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |k: &str| -> u64 {
        st.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kib("VmRSS:"), kib("VmHWM:"))
}

/// Bounded memory: 500 pods on the node (meshed, ~3 KiB of JSON each):
/// one list, then the watch; then all 500 turn Running with IPs that no
/// netns here has (the worst case: one batch, one netns search, 500
/// failures with their Events). The agent's peak RSS stays under 20 MiB.
#[test]
fn rss_with_500_pods() {
    const N: usize = 500;
    let s = Setup::new("rss");
    let pod = |i: usize, phase: &str| {
        let mut p = ApiServer::pod_json(
            "load",
            &format!("web-{i}"),
            &format!("uid-{i:04}"),
            istio_status(),
            &["app", "istio-proxy"],
            &["istio-validation"],
        );
        p["spec"]["nodeName"] = json!(NODE);
        p["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("x".repeat(2000));
        p["metadata"]["labels"]["pod-template-hash"] = json!("5d8f7c9b6d");
        if phase == "Running" {
            p["status"] = json!({"phase": "Running",
                "podIPs": [{"ip": format!("2001:db8:f::{i:x}")}]});
        }
        p
    };
    for i in 0..N {
        s.api.put_pod(&pod(i, "Pending"));
    }
    // The install pass copies --bin-src: a stand-in of the release
    // binary's size (4 MB), not this test build's (tens of MB).
    let bin = s.node.dir.join("release-sized");
    std::fs::write(&bin, vec![0x7fu8; 4_000_000]).unwrap();
    let bin_src = format!("--bin-src={}", bin.display());
    let agent = s.agent(&["--repair-mode=off", &bin_src], "");
    wait_for(Duration::from_secs(30), "500 pods watched", || {
        (sample(&agent.metrics(), "multimesh_pods_watched", json!({})) == N as f64).then_some(())
    });
    let pid = agent.pid().unwrap();
    let (rss, hwm) = rss_kib(pid);
    println!("agent with {N} pods listed: VmRSS {rss} KiB, VmHWM {hwm} KiB");
    let t0 = Instant::now();
    for i in 0..N {
        s.api.put_pod(&pod(i, "Running"));
    }
    wait_for(Duration::from_secs(120), "500 pods handled", || {
        let m = agent.metrics();
        (sample(
            &m,
            "multimesh_repairs_total",
            json!({"mode": "off", "outcome": "failed"}),
        ) >= N as f64)
            .then_some(())
    });
    println!(
        "500 pods turned Running, all handled in {} ms",
        t0.elapsed().as_millis()
    );
    // A failing pod is tried again on each change, 3 times in all.
    for n in 0..3 {
        let mut p = pod(0, "Running");
        p["metadata"]["labels"]["touch"] = json!(n.to_string());
        s.api.put_pod(&p);
        std::thread::sleep(Duration::from_millis(700));
    }
    let failed = sample(
        &agent.metrics(),
        "multimesh_repairs_total",
        json!({"mode": "off", "outcome": "failed"}),
    );
    assert_eq!(failed, (N + 2) as f64);
    let (rss, hwm) = rss_kib(pid);
    println!("agent after 500 changes: VmRSS {rss} KiB, VmHWM {hwm} KiB");
    assert!(hwm < 20 * 1024, "peak RSS {hwm} KiB");
    // One list, then watches: no per-pod requests.
    let gets: Vec<(String, String)> = common::k8s::requests(&s.api)
        .into_iter()
        .filter(|(m, p)| m == "GET" && p.contains("/pods"))
        .collect();
    assert!(gets.iter().all(|(_, p)| p == "/api/v1/pods"), "{gets:?}");
}
