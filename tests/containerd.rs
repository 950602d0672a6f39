//! multimesh on the kubelet's own path: a CRI client (what kubelet is to
//! the runtime) drives containerd 1.6's CRI plugin, which runs the CNI
//! conflist through go-cni/libcni with Kubernetes' CNI_ARGS, capability
//! runtimeConfig, and DEL on StopPodSandbox. multimesh runs in Kubernetes
//! mode against the test API server holding the same pod (two NADs, istio
//! sidecar status), all inside the test's node netns (tests/common/
//! containerd.rs: containerd, its shims, the API server, bridges and veths
//! live there; containerd's root, state, socket and CNI dirs are private).
//!
//! The conflist is the one a node would have: multimesh (meta-plugin, the
//! cluster bridge as its delegate) followed by the in-repo `mm-recorder` as
//! a chained entry that records exactly what containerd passed (CNI_ARGS,
//! capabilities → runtimeConfig, prevResult), checked in
//! `what_containerd_passes` and documented in docs/design.md.
//!
//! Needs: containerd, runc, buildah, busybox-static (scripts/deps.sh).

mod common;
use common::containerd::*;
use common::cri::*;
use common::k8s::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const IN_PORT: u16 = 15006;
const APP_PORT: u16 = 8080;

/// One test's world: node netns, API server in it, containerd in it.
struct World {
    cd: Containerd,
    api: ApiServer,
    node: Node,
}

/// The node's CNI conflist: multimesh in Kubernetes mode (cluster bridge
/// as its delegate, capability portMappings/bandwidth as a Multus config
/// declares), then mm-recorder chained, declaring every capability
/// containerd 1.6 may fill in so the record shows all of them.
fn conflist(node: &Node, api: &ApiServer) -> Value {
    let mut mm = k8s_conf(
        node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let m = mm.as_object_mut().unwrap();
    m.remove("cniVersion");
    m.remove("name");
    m.insert(
        "capabilities".into(),
        json!({"portMappings": true, "bandwidth": true}),
    );
    m.insert("logToStderr".into(), json!(false));
    m.insert(
        "logFile".into(),
        json!(node.dir.join("multimesh.log").display().to_string()),
    );
    let mut rec = node.recorder("rec", json!({}));
    let r = rec.as_object_mut().unwrap();
    r.remove("cniVersion");
    r.remove("name");
    r.insert(
        "capabilities".into(),
        json!({"portMappings": true, "bandwidth": true, "dns": true, "ips": true, "mac": true,
               "io.kubernetes.cri.pod-annotations": true, "cgroupPath": true}),
    );
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "plugins": [mm, rec]})
}

fn pod_annotations() -> Value {
    merged(
        istio_status(),
        json!({"k8s.v1.cni.cncf.io/networks": "sec, mv"}),
    )
}

impl World {
    fn new(tag: &str) -> World {
        let node = Node::new(tag);
        let api = ApiServer::start_in(&node.name);
        api.put_nad("apps", "sec", Some(&cfg(&node.second_bridge())), json!({}));
        api.put_nad("apps", "mv", Some(&cfg(&node.macvlan())), json!({}));
        let cd = Containerd::start(&node, &conflist(&node, &api));
        World { cd, api, node }
    }

    /// The pod in the API server and the matching CRI spec (kubelet copies
    /// the pod's annotations into the sandbox config).
    fn pod(&self, name: &str, ann: Value) -> PodSpec {
        let uid = format!("uid-{name}-0a1b2c3d");
        self.api.put_pod(&ApiServer::pod_json(
            "apps",
            name,
            &uid,
            ann.clone(),
            &["app", "istio-proxy"],
            &[],
        ));
        let mut p = self.cd.pod("apps", name, &uid);
        p.annotations = ann
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        p
    }

    /// The end of every test: containerd stopped cleanly (SIGTERM) with
    /// nothing that had to be killed, and no process of it left: no
    /// containerd, shim or sandbox outlives the test.
    fn finish(mut self) {
        let killed = self.cd.stop();
        assert!(killed.is_empty(), "had to kill: {killed:?}");
        let left = self.cd.processes();
        assert!(left.is_empty(), "processes left: {left:?}");
    }
}

/// Drop order: containerd first (its sandboxes' DELs need the node netns
/// and may reach the API server), then the API server, then the node.
impl Drop for World {
    fn drop(&mut self) {
        self.cd.stop();
        self.api.stop();
    }
}

/// `ip netns exec` name of a sandbox netns path (/var/run/netns/cni-...).
fn ns_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn v4_of(ns: &str, ifname: &str) -> Option<String> {
    ns_exec_ok(
        ns,
        &format!("ip -o -4 addr show dev {ifname} scope global 2>/dev/null | awk '{{print $4}}'"),
    )
    .lines()
    .next()
    .map(|c| c.split('/').next().unwrap().to_string())
}

fn links_of(ns: &str) -> Vec<String> {
    let mut l: Vec<String> = ns_exec_ok(
        ns,
        "ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1",
    )
    .lines()
    .map(String::from)
    .filter(|l| l != "lo")
    .collect();
    l.sort();
    l
}

/// What StopPodSandbox must leave in a sandbox netns held open past it.
trait SandboxEmpty {
    fn assert_empty(&self, ctx: &str);
}

impl SandboxEmpty for HeldNetns {
    fn assert_empty(&self, ctx: &str) {
        let links = self.exec("ip -o link show | awk -F': ' '{print $2}'");
        assert_eq!(
            links.trim(),
            "lo",
            "{ctx}: interfaces left in the sandbox netns"
        );
        let addrs = self.exec("ip -o addr show scope global");
        assert!(addrs.trim().is_empty(), "{ctx}: addresses left: {addrs}");
        let rules = self.exec(EVERY_RULESET);
        assert!(
            !mentions_multimesh(&rules),
            "{ctx}: capture rules left in the sandbox netns:\n{rules}"
        );
        let ip_rules = self.exec("ip rule show; ip -6 rule show");
        let extra: Vec<&str> = ip_rules
            .lines()
            .filter(|l| {
                !["lookup local", "lookup main", "lookup default"]
                    .iter()
                    .any(|t| l.ends_with(t))
            })
            .collect();
        assert!(extra.is_empty(), "{ctx}: policy rules left: {extra:?}");
    }
}

/// The netns inode of a process (to prove a container joined the sandbox).
fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

/// Everything a stopped and removed sandbox must have left behind: nothing.
fn assert_sandbox_gone(w: &World, id: &str, netns: &str) {
    assert!(
        !Path::new(netns).exists(),
        "containerd left the sandbox netns {netns}"
    );
    let cache = Containerd::cni_cache(id);
    assert!(cache.is_empty(), "libcni cache left: {cache:?}");
    w.node.assert_no_leaks_within(Duration::from_secs(5));
    for br in ["mm0", "mm1"] {
        let ports = w
            .node
            .exec(&format!("ip -o link show master {br} 2>/dev/null"));
        let ports = String::from_utf8_lossy(&ports.stdout).to_string();
        assert!(ports.trim().is_empty(), "ports left on {br}: {ports}");
    }
}

/// After every sandbox is removed: the runtime knows none, no container
/// and no shim or sandbox process is left (containerd itself is).
fn assert_runtime_empty(w: &World) {
    let ids = w.cd.cri().list_pods().expect("ListPodSandbox");
    assert!(ids.is_empty(), "sandboxes left: {ids:?}");
    let ctrs = w.cd.ctr_ok(&["containers", "ls", "-q"]);
    assert!(ctrs.trim().is_empty(), "containers left: {ctrs}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs: Vec<_> =
            w.cd.processes()
                .into_iter()
                .filter(|(_, cmd)| !cmd.starts_with("containerd --config"))
                .collect();
        if procs.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shim or sandbox processes left: {procs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The recorder's CNI_ARGS as a map.
fn args_map(args: &str) -> BTreeMap<String, String> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// RunPodSandbox → multimesh ADD (Kubernetes mode, two NADs, capture);
/// the sandbox IP CRI reports is multimesh's eth0 and the network-status
/// on the pod; an app container joins the sandbox and real TCP from the
/// node to its port lands on the sidecar port; StopPodSandbox → DEL leaves
/// nothing; RemovePodSandbox after it is clean.
#[test]
fn pod_through_cri_with_two_nads_and_capture() {
    let t0 = Instant::now();
    let w = World::new("cri-pod");
    let spec = w.pod("web", pod_annotations());
    let st = w.cd.run_pod_ok(&spec);
    assert_eq!(st.state, "SANDBOX_READY", "{st:?}");
    assert!(st.netns.starts_with("/var/run/netns/cni-"), "{st:?}");
    let ns = ns_name(&st.netns);

    // CRI's sandbox IP is multimesh's eth0 (the cluster network's result).
    let eth0 = v4_of(&ns, "eth0").expect("eth0 address");
    assert_eq!(st.ip, eth0, "CRI status {st:?}");
    assert!(eth0.starts_with("198.51.100."), "{eth0}");
    assert_eq!(links_of(&ns), ["eth0", "net1", "net2"]);
    let net1 = v4_of(&ns, "net1").expect("net1 address");
    let net2 = v4_of(&ns, "net2").expect("net2 address");
    assert!(net2.starts_with("203.0.113."), "{net2}");

    // ... and what multimesh wrote on the pod.
    let pod = w.api.pod("apps", "web");
    let status: Vec<Value> = serde_json::from_str(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
            .as_str()
            .expect("network-status written"),
    )
    .unwrap();
    let names: Vec<(&str, &str)> = status
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["interface"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("cluster", "eth0"),
            ("apps/sec", "net1"),
            ("apps/mv", "net2")
        ]
    );
    assert_eq!(status[0]["ips"], json!([st.ip]));
    assert_eq!(status[0]["default"], true);
    assert_eq!(status[1]["ips"], json!([net1]));
    assert_eq!(status[2]["ips"], json!([net2]));

    // An app container (CreateContainer + StartContainer) in the sandbox.
    let app =
        w.cd.cri()
            .start_container(
                &st.id,
                &spec,
                "app",
                APP_IMAGE,
                &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/tmp"],
            )
            .unwrap_or_else(|e| panic!("app container: {e}\n{}", w.cd.log_tail(20)));
    let (state, pid) = w.cd.cri().container_status(&app).expect("ContainerStatus");
    assert_eq!(state, "CONTAINER_RUNNING");
    assert!(pid > 0);
    assert_eq!(
        netns_inode(&format!("/proc/{pid}/ns/net")),
        netns_inode(&st.netns),
        "the app container is not in the sandbox netns"
    );

    // Capture: TCP from the node to the app's port lands on the sidecar
    // port (a listener in the sandbox netns), original destination kept;
    // on a secondary network too.
    let inspect = sh_ok(&format!("{BIN} inspect --netns {}", st.netns));
    assert!(inspect.contains("backend: iptables"), "{inspect}");
    for ip in [&eth0, &net1] {
        let _proxy = Listener::start(&ns, IN_PORT, false, 1);
        let a = connect(&w.node.name, ip, APP_PORT, false, None)
            .unwrap_or_else(|e| panic!("connect {ip}:{APP_PORT}: {e}"));
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
        assert_eq!(field(&a, "orig"), format!("{ip}:{APP_PORT}"), "{a}");
    }
    // StopPodSandbox: containerd stops the app, runs DEL, removes the netns.
    let held = HeldNetns::open(&st.netns);
    w.cd.cri().stop_pod(&st.id).expect("StopPodSandbox");
    held.assert_empty("after StopPodSandbox");
    let after = w.cd.status_ok(&st.id);
    assert_eq!(after.state, "SANDBOX_NOTREADY");
    assert!(
        !w.node.cni_dir().join(&st.id).exists(),
        "multimesh state left after DEL"
    );
    assert_sandbox_gone(&w, &st.id, &st.netns);
    let calls = w.node.call_list();
    assert_eq!(calls, ["ADD eth0", "DEL eth0"], "{calls:?}");

    // RemovePodSandbox after the stop (containerd DELs once more, without
    // a netns: see what_containerd_passes): all clean.
    w.cd.cri().remove_pod(&st.id).expect("RemovePodSandbox");
    assert_eq!(w.node.call_list(), ["ADD eth0", "DEL eth0", "DEL eth0"]);
    assert!(w.cd.cri().status(&st.id).is_err(), "sandbox still known");
    assert_runtime_empty(&w);
    w.node.assert_no_leaks();
    w.finish();
    eprintln!("[cri-pod] {:.1}s", t0.elapsed().as_secs_f64());
}

/// What containerd 1.6's CRI passes to the CNI chain, as the chained
/// mm-recorder saw it (docs/design.md, "Under containerd").
#[test]
fn what_containerd_passes() {
    let w = World::new("cri-args");
    let spec = w.pod("args", pod_annotations());
    let st = w.cd.run_pod_ok(&spec);
    let calls = w.node.calls();
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let add = &calls[0];
    assert_eq!(add["command"], "ADD");
    assert_eq!(add["ifname"], "eth0");
    assert_eq!(add["containerID"], st.id.as_str());
    assert_eq!(add["netns"], st.netns.as_str());
    assert_eq!(
        add["path"],
        w.cd.cni_bin_dir().display().to_string(),
        "CNI_PATH is containerd's bin_dir"
    );
    let args = args_map(add["args"].as_str().unwrap());
    let want: BTreeMap<String, String> = [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", "apps"),
        ("K8S_POD_NAME", "args"),
        ("K8S_POD_INFRA_CONTAINER_ID", st.id.as_str()),
        ("K8S_POD_UID", spec.uid.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(args, want, "CNI_ARGS {}", add["args"]);
    // Capabilities: containerd fills in the ones a plugin declares and it
    // has: the pod's annotations (all of them), portMappings and bandwidth
    // (empty for this pod: nothing is sent), dns (none in this config).
    let rc = &add["config"]["runtimeConfig"];
    eprintln!("[cri-args] CNI_ARGS {}\nruntimeConfig {rc}", add["args"]);
    let ann = &rc["io.kubernetes.cri.pod-annotations"];
    assert_eq!(
        ann["k8s.v1.cni.cncf.io/networks"], "sec, mv",
        "runtimeConfig {rc}"
    );
    assert!(ann["sidecar.istio.io/status"].is_string(), "{rc}");
    // The chained entry got multimesh's result (the cluster network's).
    let prev = &add["config"]["prevResult"];
    assert_eq!(
        prev["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        st.ip,
        "{prev}"
    );
    assert_eq!(add["config"]["name"], "k8s-pod-network");
    assert_eq!(add["config"]["cniVersion"], "1.0.0");
    // multimesh got the same: it read the pod CNI_ARGS named.
    let reqs = requests(&w.api);
    assert!(
        reqs.contains(&("GET".into(), "/api/v1/namespaces/apps/pods/args".into())),
        "{reqs:?}"
    );

    // DEL on StopPodSandbox with the same arguments and the netns.
    w.cd.cri().stop_pod(&st.id).unwrap();
    let calls = w.node.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let del = &calls[1];
    assert_eq!(del["command"], "DEL");
    assert_eq!(args_map(del["args"].as_str().unwrap()), want);
    assert_eq!(del["containerID"], st.id.as_str());
    assert_eq!(del["netns"], st.netns.as_str());
    // RemovePodSandbox runs the sandbox stop again, and with it a second
    // DEL, now with an empty CNI_NETNS (the netns is gone): multimesh's
    // DEL from state alone must (and does) succeed.
    w.cd.cri().remove_pod(&st.id).unwrap();
    let calls = w.node.calls();
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(calls[2]["command"], "DEL");
    assert_eq!(calls[2]["netns"], "");
    assert_eq!(args_map(calls[2]["args"].as_str().unwrap()), want);
    assert_sandbox_gone(&w, &st.id, &st.netns);
    assert_runtime_empty(&w);
    w.finish();
}

/// 16 RunPodSandbox at once (kubelet's pod workers), then 16
/// StopPodSandbox at once and 16 RemovePodSandbox: every sandbox gets its
/// own addresses and capture, nothing fails, nothing is left.
#[test]
fn sixteen_sandboxes_at_once() {
    const N: usize = 16;
    let w = World::new("cri-16");
    let specs: Vec<PodSpec> = (0..N)
        .map(|i| w.pod(&format!("p{i}"), pod_annotations()))
        .collect();
    let t = Instant::now();
    let ids: Vec<String> =
        w.cd.cri()
            .run_pods_at_once(&specs)
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|e| panic!("RunPodSandbox p{i}: {e}\n{}", w.cd.log_tail(30)))
            })
            .collect();
    let started = t.elapsed();
    let sts: Vec<SandboxStatus> = ids.iter().map(|id| w.cd.status_ok(id)).collect();
    let mut ips: Vec<&str> = sts.iter().map(|s| s.ip.as_str()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), N, "{ips:?}");
    for s in &sts {
        let ns = ns_name(&s.netns);
        assert_eq!(links_of(&ns), ["eth0", "net1", "net2"], "{}", s.id);
        assert_eq!(v4_of(&ns, "eth0").as_deref(), Some(s.ip.as_str()));
        let nat = ns_exec_ok(&ns, "iptables-legacy-save -t nat");
        assert!(nat.contains("MULTIMESH"), "{}: {nat}", s.id);
    }
    let held: Vec<HeldNetns> = sts.iter().map(|s| HeldNetns::open(&s.netns)).collect();
    let t = Instant::now();
    for (i, r) in w.cd.cri().stop_pods_at_once(&ids, false).iter().enumerate() {
        r.as_ref()
            .unwrap_or_else(|e| panic!("StopPodSandbox p{i}: {e}"));
    }
    let stopped = t.elapsed();
    for h in &held {
        h.assert_empty("after 16 StopPodSandbox");
    }
    for (i, r) in w.cd.cri().stop_pods_at_once(&ids, true).iter().enumerate() {
        r.as_ref()
            .unwrap_or_else(|e| panic!("RemovePodSandbox p{i}: {e}"));
    }
    eprintln!(
        "[cri-16] {N} RunPodSandbox at once: {:.1}s, {N} StopPodSandbox at once: {:.1}s",
        started.as_secs_f64(),
        stopped.as_secs_f64()
    );
    for s in &sts {
        assert_sandbox_gone(&w, &s.id, &s.netns);
    }
    let calls = w.node.calls();
    let adds = calls.iter().filter(|c| c["command"] == "ADD").count();
    let dels = calls.iter().filter(|c| c["command"] == "DEL").count();
    // One DEL on StopPodSandbox, one more on RemovePodSandbox.
    assert_eq!(
        (adds, dels),
        (N, 2 * N),
        "recorder saw {adds} ADD, {dels} DEL"
    );
    assert_runtime_empty(&w);
    w.finish();
}

/// containerd restarted while sandboxes run (shims and sandboxes live on;
/// the new containerd recovers them from its root/state), then the
/// sandboxes stopped and removed through the new one: clean.
#[test]
fn containerd_restart_with_running_sandboxes() {
    let mut w = World::new("cri-rst");
    let specs: Vec<PodSpec> = (0..3)
        .map(|i| w.pod(&format!("r{i}"), pod_annotations()))
        .collect();
    let sts: Vec<SandboxStatus> = specs.iter().map(|s| w.cd.run_pod_ok(s)).collect();
    let pids: Vec<u32> = sts.iter().map(|s| s.pid).collect();
    assert!(pids.iter().all(|p| *p > 0), "{sts:?}");
    w.cd.restart();
    for (s, pid) in sts.iter().zip(&pids) {
        let again = w.cd.status_ok(&s.id);
        assert_eq!(again.state, "SANDBOX_READY", "after restart: {again:?}");
        assert_eq!(again.ip, s.ip, "IP after restart");
        assert_eq!(again.pid, *pid, "the sandbox process survived the restart");
        let ns = ns_name(&s.netns);
        assert_eq!(links_of(&ns), ["eth0", "net1", "net2"]);
        // Capture still works (nothing re-ran ADD).
        let _proxy = Listener::start(&ns, IN_PORT, false, 1);
        let a = connect(&w.node.name, &s.ip, APP_PORT, false, None).expect("connect");
        assert_eq!(field(&a, "served_by"), IN_PORT.to_string(), "{a}");
    }
    let adds = w.node.calls().len();
    assert_eq!(
        adds,
        3,
        "a restart must not re-run ADD: {:?}",
        w.node.call_list()
    );
    let held: Vec<HeldNetns> = sts.iter().map(|s| HeldNetns::open(&s.netns)).collect();
    for s in &sts {
        w.cd.cri()
            .stop_pod(&s.id)
            .expect("StopPodSandbox after restart");
        w.cd.cri()
            .remove_pod(&s.id)
            .expect("RemovePodSandbox after restart");
    }
    for (s, h) in sts.iter().zip(&held) {
        h.assert_empty("stopped after a containerd restart");
        assert_sandbox_gone(&w, &s.id, &s.netns);
    }
    assert_runtime_empty(&w);
    w.finish();
}

/// A NAD whose plugin fails: RunPodSandbox fails with multimesh's message
/// (kubelet would show it in the pod's events), containerd's own cleanup
/// DEL succeeds, and nothing is left: no sandbox, netns, interface, IP,
/// state, process.
#[test]
fn failing_nad_fails_run_pod_sandbox_cleanly() {
    let w = World::new("cri-fail");
    w.api.put_nad(
        "apps",
        "broken",
        Some(&cfg(&w.node.recorder(
            "broken",
            json!({"failOn": "ADD", "failCode": 11}),
        ))),
        json!({}),
    );
    let spec = w.pod(
        "bad",
        merged(
            istio_status(),
            json!({"k8s.v1.cni.cncf.io/networks": "sec, broken"}),
        ),
    );
    let err =
        w.cd.cri()
            .run_pod(&spec)
            .expect_err("RunPodSandbox succeeded");
    assert!(
        err.contains("mm-recorder: ADD failed as configured") && err.contains("broken"),
        "CRI error does not carry multimesh's message: {err}"
    );
    eprintln!("[cri-fail] RunPodSandbox: {err}");
    // No sandbox is left in the runtime (containerd removes a sandbox
    // whose network setup failed) and no netns of it.
    let ids = w.cd.cri().list_pods().unwrap();
    assert!(ids.is_empty(), "{ids:?}");
    w.node.assert_no_leaks_within(Duration::from_secs(5));
    let netns = w.node.calls()[0]["netns"].as_str().unwrap().to_string();
    assert!(netns.contains("/netns/cni-"), "{netns}");
    assert!(!Path::new(&netns).exists(), "netns left: {netns}");
    // The NAD's ADD failed and multimesh rolled it back (DEL net2); the
    // chain stopped there, and containerd's cleanup DEL ran the whole
    // conflist in reverse: the chained recorder (DEL eth0, never ADDed),
    // then multimesh, with nothing left to undo.
    assert_eq!(w.node.call_list(), ["ADD net2", "DEL net2", "DEL eth0"]);
    // The pod got no network-status.
    let pod = w.api.pod("apps", "bad");
    assert!(
        pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"].is_null(),
        "{pod}"
    );
    assert_runtime_empty(&w);
    w.finish();
}
