//! The trust boundary (contract §6, docs/security.md), end to end: what a
//! tenant controls (pod annotations, NetworkAttachmentDefinitions) never
//! runs a program outside binDir/CNI_PATH, never touches a path the node's
//! config does not name, never makes DEL fail for good, stays bounded, and
//! never changes what another container's ADD created. Real binary, real
//! plugins, the test API server.

mod common;
use common::k8s::*;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A canary a hostile config would create: its path, not yet there.
fn canary(node: &Node, name: &str) -> std::path::PathBuf {
    let p = node.dir.join(name);
    assert!(!p.exists());
    p
}

/// A pod `apps/<name>` meshed by istio with `ann` merged in, on `api`.
fn put_pod(api: &ApiServer, name: &str, uid: &str, ann: Value) {
    api.put_pod(&ApiServer::pod_json(
        "apps",
        name,
        uid,
        merged(istio_status(), ann),
        &["app", "istio-proxy"],
        &[],
    ));
}

/// ADD refused with `code` before anything ran: no interface, no state,
/// no delegate call, no capture; a DEL afterwards succeeds.
fn refused_before_anything(
    node: &Node,
    conf: &Value,
    pod: &Pod,
    cid: &str,
    id: (&str, &str, &str),
    code: u64,
) -> String {
    let calls = node.calls().len();
    let msg = cni_pod(node, "ADD", conf, pod, cid, id).err(code);
    assert!(pod.links().is_empty(), "{msg}: {:?}", pod.links());
    assert_eq!(node.calls().len(), calls, "{msg}: a delegate ran");
    pod.assert_no_capture(&msg);
    node.assert_no_leaks();
    cni_pod(node, "DEL", conf, pod, cid, id).ok();
    node.assert_no_leaks();
    msg
}

// 1. A NetworkAttachmentDefinition that runs multimesh (by type, inside a
//    conflist, or through another file name for the same binary) is refused
//    with code 7 naming it, before anything runs: the nested multimesh that
//    would have honoured the NAD's binDir and run /bin/sh as root never
//    starts. allowedNetworkTypes narrows NADs further when set.
#[test]
fn nad_running_multimesh_is_refused() {
    let node = Node::new("tb-nad");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    let pwned = canary(&node, "pwned");
    let exploit = json!({"cniVersion": "1.0.0", "type": "multimesh", "binDir": "/bin",
        "cniDir": node.dir.join("evil-state").display().to_string(),
        "logFile": node.dir.join("evil.log").display().to_string(),
        "delegates": [{"name": "x", "type": "sh",
                        "x": format!("$(id > {})", pwned.display())}]});
    api.put_nad("apps", "evil", Some(&cfg(&exploit)), json!({}));
    let list = json!({"cniVersion": "1.0.0", "name": "evil-list",
        "plugins": [node.recorder("first", json!({})), exploit]});
    api.put_nad("apps", "evil-list", Some(&cfg(&list)), json!({}));
    // The same binary under another name, in a directory on CNI_PATH.
    let alias_dir = node.dir.join("alias");
    std::fs::create_dir_all(&alias_dir).unwrap();
    std::os::unix::fs::symlink(BIN, alias_dir.join("mm-alias")).unwrap();
    let alias = json!({"cniVersion": "1.0.0", "type": "mm-alias"});
    api.put_nad("apps", "alias", Some(&cfg(&alias)), json!({}));
    let conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let cni_path = format!("{}:{REF_PLUGINS}", alias_dir.display());
    for (i, net) in ["evil", "evil-list", "alias"].iter().enumerate() {
        let name = format!("p{i}");
        let uid = format!("uid-{i}");
        put_pod(
            &api,
            &name,
            &uid,
            json!({"k8s.v1.cni.cncf.io/networks": net}),
        );
        let args = pod_args("apps", &name, &uid, "cn");
        let out = node.cni_env(
            "ADD",
            &conf,
            &pod.path,
            "cn",
            "eth0",
            &[("CNI_ARGS", &args), ("CNI_PATH", &cni_path)],
        );
        let msg = out.err(7);
        assert!(
            msg.contains(&format!("apps/{net}")) && msg.contains("multimesh"),
            "{msg}"
        );
        assert!(pod.links().is_empty(), "{net}: {:?}", pod.links());
        node.assert_no_leaks();
        node.cni_env(
            "DEL",
            &conf,
            &pod.path,
            "cn",
            "eth0",
            &[("CNI_ARGS", &args), ("CNI_PATH", &cni_path)],
        )
        .ok();
    }
    assert!(!pwned.exists(), "the NAD ran a shell");
    for f in ["evil-state", "evil.log"] {
        assert!(!node.dir.join(f).exists(), "{f} was created");
    }

    // allowedNetworkTypes: a NAD of another type is refused, the listed ones work.
    let mut conf = conf;
    conf["allowedNetworkTypes"] = json!(["bridge"]);
    api.put_nad(
        "apps",
        "rec",
        Some(&cfg(&node.recorder("rec", json!({})))),
        json!({}),
    );
    api.put_nad("apps", "sec", Some(&cfg(&node.second_bridge())), json!({}));
    put_pod(
        &api,
        "q",
        "uid-q",
        json!({"k8s.v1.cni.cncf.io/networks": "rec"}),
    );
    let id = ("apps", "q", "uid-q");
    let msg = refused_before_anything(&node, &conf, &pod, "cq", id, 7);
    assert!(msg.contains("allowedNetworkTypes"), "{msg}");
    put_pod(
        &api,
        "q",
        "uid-q",
        json!({"k8s.v1.cni.cncf.io/networks": "sec"}),
    );
    cni_pod(&node, "ADD", &conf, &pod, "cq", id).ok();
    assert_eq!(pod.links().len(), 2);
    cni_pod(&node, "DEL", &conf, &pod, "cq", id).ok();
    node.assert_no_leaks();
}

// 2. multimesh run as a delegate of multimesh (here from the node's own
//    config) takes nothing from its config: not its delegates, binDir,
//    cniDir (the outer one's, whose container lock the outer holds: it
//    used to wait for it until the delegate timeout), kubeconfig or
//    logFile. It answers at once and DEL finishes too.
#[test]
fn nested_multimesh_takes_nothing_and_never_waits() {
    let node = Node::new("tb-nest");
    let pod = node.pod("p");
    let pwned = canary(&node, "pwned");
    let log = canary(&node, "inner.log");
    let inner = json!({"cniVersion": "1.0.0", "name": "inner", "type": "multimesh",
        "binDir": "/bin", "cniDir": node.cni_dir().display().to_string(),
        "logFile": log.display().to_string(), "kubeconfig": "/nonexistent/kubeconfig",
        "delegates": [{"name": "x", "type": "sh", "x": format!("$(id > {})", pwned.display())}]});
    let conf = node.meta(
        vec![node.cluster_bridge(), inner],
        json!({"enabled": false}),
    );
    let t = Instant::now();
    node.cni("ADD", &conf, &pod.path, "cnest", "eth0").ok();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "nested ADD took {:?}",
        t.elapsed()
    );
    assert_eq!(
        pod.links(),
        ["eth0"],
        "the inner multimesh attached something"
    );
    node.cni("CHECK", &conf, &pod.path, "cnest", "eth0").ok();
    let t = Instant::now();
    node.cni("DEL", &conf, &pod.path, "cnest", "eth0").ok();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!pwned.exists(), "the inner multimesh ran its delegates");
    assert!(!log.exists(), "the inner multimesh opened its logFile");
    node.assert_no_leaks();
}

// 3. DEL and GC always finish. An attachment whose ADD failed gets a
//    best-effort DEL and is dropped, even when that DEL fails too (macvlan
//    on a master that does not exist answers "Link not found" to DEL as
//    well); a delegate without a name reads back; GC goes on past
//    attachments whose DEL fails and reports every failure.
#[test]
fn del_and_gc_always_finish() {
    let node = Node::new("tb-del");
    let pod = node.pod("p");
    let mut mv = node.macvlan();
    mv["master"] = json!("mmnosuch0");
    let conf = node.meta(vec![node.cluster_bridge(), mv], legacy());
    let msg = node.cni("ADD", &conf, &pod.path, "cmv", "eth0").err(999);
    assert!(
        msg.contains("net1") && msg.contains("Link not found"),
        "{msg}"
    );
    assert!(pod.links().is_empty());
    node.assert_no_leaks();
    node.cni("DEL", &conf, &pod.path, "cmv", "eth0").ok();
    node.cni("DEL", &conf, "", "cmv", "eth0").ok();
    gc(&node, &conf, json!([])).ok();
    pod.assert_no_capture("after the failed macvlan ADD");
    node.assert_no_leaks();

    // A delegate without a name.
    let mut anon = node.recorder("x", json!({}));
    anon.as_object_mut().unwrap().remove("name");
    let conf = node.meta(vec![node.cluster_bridge(), anon], legacy());
    node.cni("ADD", &conf, &pod.path, "canon", "eth0").ok();
    node.cni("CHECK", &conf, &pod.path, "canon", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "canon", "eth0").ok();
    node.assert_no_leaks();

    // GC past failures: two stale attachments whose DEL fails, one that works.
    let bad = node.meta(
        vec![node.recorder("bad", json!({"failOn": "DEL", "failCode": 11}))],
        json!({"enabled": false}),
    );
    let good = node.meta(
        vec![node.recorder("good", json!({}))],
        json!({"enabled": false}),
    );
    for (cid, c) in [("g1", &bad), ("g2", &bad), ("g3", &good)] {
        node.cni("ADD", c, &pod.path, cid, "eth0").ok();
    }
    let out = gc(&node, &bad, json!([]));
    let msg = out.err(11);
    assert!(msg.contains("2 steps failed"), "{msg}");
    let details = out.json["details"].as_str().unwrap_or("");
    assert!(details.contains("g2"), "details: {details}");
    assert!(
        !node.dir.join("leak").join("g3-eth0").exists(),
        "GC stopped at the first failure"
    );
    assert!(node.cni_dir().join("g1").exists() && node.cni_dir().join("g2").exists());
    // GC also drops capture owner markers whose record is gone.
    let owners = node.cni_dir().join("netns");
    std::fs::create_dir_all(&owners).unwrap();
    let dangling = owners.join("1-2.gone.eth0");
    std::os::unix::fs::symlink("../gone/eth0.json", &dangling).unwrap();
    let keep = json!([{"containerID": "g1", "ifname": "eth0"},
                      {"containerID": "g2", "ifname": "eth0"}]);
    gc(&node, &bad, keep).ok();
    assert!(std::fs::symlink_metadata(&dangling).is_err(), "marker kept");
    assert!(node.cni_dir().join("g1").exists() && node.cni_dir().join("g2").exists());
}

/// GC with `valid` as cni.dev/valid-attachments.
fn gc(node: &Node, conf: &Value, valid: Value) -> CniOut {
    let mut c = conf.clone();
    c["cniVersion"] = json!("1.1.0");
    c["cni.dev/valid-attachments"] = valid;
    node.cni_env("GC", &c, "", "", "", &[])
}

// 4. What the pod writes is checked before anything runs: cni-args of the
//    wrong type or with an address host-local would refuse (on ADD and on
//    every DEL after), JSON nested too deep, an annotation too large.
#[test]
fn pod_input_is_checked_before_anything_runs() {
    let node = Node::new("tb-pod");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    api.put_nad("apps", "sec", Some(&cfg(&node.second_bridge())), json!({}));
    let conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let id = ("apps", "w", "uid-w");
    let mut deep = json!("x");
    for _ in 0..124 {
        deep = json!([deep]);
    }
    let cases: Vec<(&str, String)> = vec![
        (
            "is not an IP address",
            json!([{"name": "sec", "cni-args": {"ips": ["bogus"]}}]).to_string(),
        ),
        (
            "is not a MAC address",
            json!([{"name": "sec", "cni-args": {"mac": "nope"}}]).to_string(),
        ),
        (
            "values must be",
            json!([{"name": "sec", "cni-args": {"x": {"y": 1}}}]).to_string(),
        ),
        (
            "nested deeper",
            json!([{"name": "sec", "cni-args": {"deep": deep}}]).to_string(),
        ),
        ("bytes, more than", format!("sec{}", ", sec".repeat(20_000))),
    ];
    for (want, ann) in cases {
        put_pod(
            &api,
            "w",
            "uid-w",
            json!({"k8s.v1.cni.cncf.io/networks": ann}),
        );
        api.clear_requests();
        let msg = refused_before_anything(&node, &conf, &pod, "cw", id, 110);
        assert!(msg.contains(want), "want {want:?}: {msg}");
        let nad_gets = requests(&api)
            .iter()
            .filter(|(_, p)| p.contains("network-attachment-definitions"))
            .count();
        assert_eq!(nad_gets, 0, "{want}: a NAD was fetched");
    }
    // A valid cni-args address goes through.
    put_pod(
        &api,
        "w",
        "uid-w",
        json!({"k8s.v1.cni.cncf.io/networks":
            json!([{"name": "sec", "cni-args": {"ips": ["198.51.100.200"]}}]).to_string()}),
    );
    cni_pod(&node, "ADD", &conf, &pod, "cw", id).ok();
    assert!(
        pod.addrs("net1")
            .iter()
            .any(|a| a.starts_with("198.51.100.200/")),
        "{:?}",
        pod.addrs("net1")
    );
    cni_pod(&node, "DEL", &conf, &pod, "cw", id).ok();
    node.assert_no_leaks();

    // A NAD config nested too deep or too large: code 7, nothing ran.
    let mut deep_cfg = node.second_bridge();
    let mut d = json!(1);
    for _ in 0..40 {
        d = json!({"a": d});
    }
    deep_cfg["x"] = d;
    api.put_nad("apps", "deep", Some(&cfg(&deep_cfg)), json!({}));
    let mut big_cfg = node.second_bridge();
    big_cfg["pad"] = json!("x".repeat(300 * 1024));
    api.put_nad("apps", "big", Some(&cfg(&big_cfg)), json!({}));
    for (net, want) in [("deep", "nested deeper"), ("big", "bytes, more than")] {
        put_pod(
            &api,
            "w",
            "uid-w",
            json!({"k8s.v1.cni.cncf.io/networks": net}),
        );
        let msg = refused_before_anything(&node, &conf, &pod, "cw", id, 7);
        assert!(
            msg.contains(want) && msg.contains(&format!("apps/{net}")),
            "{msg}"
        );
    }
}

// 5. A record that would not read back is never written: a delegate config
//    (here the node's own) nested so deep that the record passes the JSON
//    reader's limit is refused at ADD (102) before anything runs, instead
//    of an ADD that works and a DEL that forgets its delegates.
#[test]
fn unreadable_record_is_refused_at_add() {
    let node = Node::new("tb-rec");
    let pod = node.pod("p");
    // The config itself reads (depth 3 + n); the record nests 2 more.
    let n = 124;
    let mut d = json!(1);
    for _ in 0..n {
        d = json!([d]);
    }
    let mut rec = node.recorder("deep", json!({}));
    rec["deep"] = d;
    let conf = node.meta(vec![rec], json!({"enabled": false}));
    let msg = node.cni("ADD", &conf, &pod.path, "cdeep", "eth0").err(102);
    assert!(msg.contains("would not read back"), "{msg}");
    assert!(node.calls().is_empty(), "a delegate ran");
    node.assert_no_leaks();
    node.cni("DEL", &conf, &pod.path, "cdeep", "eth0").ok();
}

// 6. namespaceIsolation covers the default-network annotation too: a pod
//    cannot put its eth0 on another tenant's network. Its own namespace,
//    globalNamespaces and multusNamespace (the admin's) stay allowed.
#[test]
fn namespace_isolation_covers_default_network() {
    let node = Node::new("tb-iso");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    let mut secret = node.second_bridge();
    secret["name"] = json!("secret");
    api.put_nad("other", "secret", Some(&cfg(&secret)), json!({}));
    api.put_nad("apps", "mine", Some(&cfg(&secret)), json!({}));
    let mut conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    conf["namespaceIsolation"] = json!(true);
    let id = ("apps", "d", "uid-d");
    put_pod(
        &api,
        "d",
        "uid-d",
        json!({"v1.multus-cni.io/default-network": "other/secret"}),
    );
    let msg = refused_before_anything(&node, &conf, &pod, "ci", id, 110);
    assert!(
        msg.contains("v1.multus-cni.io/default-network") && msg.contains("namespaceIsolation"),
        "{msg}"
    );
    put_pod(
        &api,
        "d",
        "uid-d",
        json!({"v1.multus-cni.io/default-network": "apps/mine"}),
    );
    cni_pod(&node, "ADD", &conf, &pod, "ci", id).ok();
    cni_pod(&node, "DEL", &conf, &pod, "ci", id).ok();
    node.assert_no_leaks();
}

// 7. Networks per pod are bounded (maxNetworksPerPod, default 32) before
//    any NetworkAttachmentDefinition is fetched.
#[test]
fn networks_per_pod_are_bounded() {
    let node = Node::new("tb-many");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    api.put_nad(
        "apps",
        "r",
        Some(&cfg(&node.recorder("r", json!({})))),
        json!({}),
    );
    let mut conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let id = ("apps", "m", "uid-m");
    let many: Vec<String> = (0..2000).map(|i| format!("r@n{i}")).collect();
    put_pod(
        &api,
        "m",
        "uid-m",
        json!({"k8s.v1.cni.cncf.io/networks": many.join(",")}),
    );
    api.clear_requests();
    let t = Instant::now();
    let msg = refused_before_anything(&node, &conf, &pod, "cm", id, 110);
    assert!(msg.contains("maxNetworksPerPod (32)"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(
        requests(&api)
            .iter()
            .all(|(_, p)| !p.contains("network-attachment-definitions")),
        "{:?}",
        requests(&api)
    );
    // The admin's own bound: 3 in all (eth0 + 2).
    conf["maxNetworksPerPod"] = json!(3);
    put_pod(
        &api,
        "m",
        "uid-m",
        json!({"k8s.v1.cni.cncf.io/networks": "r@a1,r@a2,r@a3"}),
    );
    refused_before_anything(&node, &conf, &pod, "cm", id, 110);
    put_pod(
        &api,
        "m",
        "uid-m",
        json!({"k8s.v1.cni.cncf.io/networks": "r@a1,r@a2"}),
    );
    cni_pod(&node, "ADD", &conf, &pod, "cm", id).ok();
    cni_pod(&node, "DEL", &conf, &pod, "cm", id).ok();
    node.assert_no_leaks();
}

// 8. Capture belongs to the netns: two containers asking for it in one
//    netns both own it; the first DEL leaves it for the other, a failed
//    ADD of a third does not remove it, the last DEL does.
#[test]
fn capture_belongs_to_every_owner_of_the_netns() {
    let node = Node::new("tb-own");
    let pod = node.pod("p");
    let first = node.meta(vec![node.cluster_bridge()], legacy());
    node.cni("ADD", &first, &pod.path, "own1", "eth0").ok();
    let second = node.meta(vec![node.recorder("r2", json!({}))], legacy());
    node.cni("ADD", &second, &pod.path, "own2", "eth1").ok();
    node.cni("DEL", &second, &pod.path, "own2", "eth1").ok();
    node.cni("CHECK", &first, &pod.path, "own1", "eth0").ok();
    let failing = node.meta(
        vec![node.recorder("r3", json!({"failOn": "ADD"}))],
        legacy(),
    );
    node.cni("ADD", &failing, &pod.path, "own3", "eth2").err(11);
    node.cni("CHECK", &first, &pod.path, "own1", "eth0").ok();
    node.cni("DEL", &first, &pod.path, "own1", "eth0").ok();
    pod.assert_no_capture("after the last owner's DEL");
    node.assert_no_leaks();
}

// 9. Identifiers: a container ID longer than a file name works for ADD,
//    CHECK and DEL alike (its state directory is named by its hash); one
//    beyond the bound is refused by every command; interface names are
//    checked once, the same way everywhere (no hidden record, no
//    wildcard that means one thing to iptables and another to nftables).
#[test]
fn identifiers_are_bounded_and_consistent() {
    let node = Node::new("tb-ids");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], legacy());
    let long = "c".repeat(300);
    node.cni("ADD", &conf, &pod.path, &long, "eth0").ok();
    node.cni("CHECK", &conf, &pod.path, &long, "eth0").ok();
    let dirs: Vec<String> = walk(&node.cni_dir())
        .into_iter()
        .filter(|d| d.contains("+sha256-"))
        .collect();
    assert!(!dirs.is_empty(), "{:?}", walk(&node.cni_dir()));
    node.cni("DEL", &conf, &pod.path, &long, "eth0").ok();
    pod.assert_no_capture("long container id");
    node.assert_no_leaks();

    let too_long = "c".repeat(multimesh::cni::MAX_CONTAINER_ID + 1);
    for cmd in ["ADD", "DEL"] {
        node.cni(cmd, &conf, &pod.path, &too_long, "eth0").err(4);
    }
    for ifname in [".eth0", "e+", "-x"] {
        let msg = node.cni("ADD", &conf, &pod.path, "cif", ifname).err(4);
        assert!(msg.contains("CNI_IFNAME"), "{msg}");
    }
    for ex in ["e+", "veth*"] {
        let c = node.meta(
            vec![node.cluster_bridge()],
            json!({"backend": "nftables", "excludeInterfaces": [ex]}),
        );
        let msg = node.cni("ADD", &c, &pod.path, "cif", "eth0").err(7);
        assert!(msg.contains("excludeInterfaces"), "{msg}");
    }
    assert!(pod.links().is_empty());
    node.assert_no_leaks();
}

// 10. `inspect` prints what is in the pod netns (interface names come from
//     the pod): control characters are escaped, never written raw.
#[test]
fn inspect_escapes_control_characters() {
    let node = Node::new("tb-insp");
    let pod = node.pod("p");
    pod.exec_ok("ip link add $'x\\x1b[2Jy' type veth peer name mmpeer");
    let o = sh_ok(&format!("{BIN} inspect --netns {}", pod.path));
    assert!(!o.contains('\x1b'), "raw escape in: {o:?}");
    assert!(o.contains("x\\u{1b}[2Jy"), "{o}");
}

// 11. ADD's state writes are linear in the number of attachments: the
//     record is written whole before the first delegate and at the end;
//     each delegate in between appends one line to the record's journal.
//     A crash midway (SIGKILL while the third delegate runs) leaves the
//     first record and two steps, and DEL undoes all three.
#[test]
fn state_steps_are_appended_not_rewritten() {
    let node = Node::new("tb-steps");
    let pod = node.pod("p");
    let slow = json!({"sleepMs": 20_000, "sleepOn": "ADD"});
    let conf = node.meta(
        vec![
            node.recorder("s1", json!({})),
            node.recorder("s2", json!({})),
            node.recorder("s3", slow),
        ],
        json!({"enabled": false}),
    );
    let env = cni_env("ADD", &pod.path, "csteps", "eth0");
    let mut child = spawn_in(&node.name, BIN, &env, &serde_json::to_vec(&conf).unwrap());
    let dir = node.cni_dir().join("csteps");
    let record = dir.join("eth0.json");
    let t = Instant::now();
    while node.calls().len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the third ADD never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let first: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert!(
        first["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["result"].is_null()),
        "the record was rewritten: {first}"
    );
    let steps = std::fs::read_to_string(dir.join("eth0.steps")).unwrap();
    assert_eq!(steps.lines().count(), 2, "{steps}");
    // DEL reads record + steps: all three delegates were started.
    node.cni("DEL", &conf, &pod.path, "csteps", "eth0").ok();
    let dels: Vec<String> = node
        .calls()
        .iter()
        .filter(|c| c["command"] == "DEL")
        .map(|c| c["config"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(dels, ["s3", "s2", "s1"]);
    node.assert_no_leaks();
}

// 12. Touch only your own: a second container ADDed on the same netns with
//     an interface name already there fails with 106 before any delegate
//     runs, and the first container's eth0, address and capture stay.
//     (Its rollback used to DEL the first one's eth0.)
#[test]
fn an_existing_interface_is_never_touched() {
    let node = Node::new("tb-exist");
    let pod = node.pod("p");
    let conf = node.meta(vec![node.cluster_bridge()], legacy());
    node.cni("ADD", &conf, &pod.path, "first", "eth0").ok();
    let before = pod.addrs("eth0");
    let rules = pod.exec_ok("iptables-legacy-save -t nat | grep -c MULTIMESH");
    let second = node.meta(
        vec![node.cluster_bridge(), node.recorder("r", json!({}))],
        legacy(),
    );
    let msg = node
        .cni("ADD", &second, &pod.path, "second", "eth0")
        .err(106);
    assert!(
        msg.contains("eth0") && msg.contains("already exists"),
        "{msg}"
    );
    assert!(node.calls().is_empty(), "a delegate ran");
    // A different interface of the second container that clashes (net1).
    pod.exec_ok("ip link add net1 type veth peer name mmpeer1");
    let msg = node
        .cni("ADD", &second, &pod.path, "second", "eth9")
        .err(106);
    assert!(msg.contains("net1"), "{msg}");
    assert!(node.calls().is_empty(), "a delegate ran");
    assert_eq!(pod.addrs("eth0"), before);
    assert_eq!(
        pod.exec_ok("iptables-legacy-save -t nat | grep -c MULTIMESH"),
        rules
    );
    node.cni("CHECK", &conf, &pod.path, "first", "eth0").ok();
    node.cni("DEL", &second, &pod.path, "second", "eth0").ok();
    node.cni("CHECK", &conf, &pod.path, "first", "eth0").ok();
    node.cni("DEL", &conf, &pod.path, "first", "eth0").ok();
    pod.exec_ok("ip link del net1");
    pod.assert_no_capture("after the last DEL");
    node.assert_no_leaks();
}

// 13. The boundary as a property: random NetworkAttachmentDefinitions
//     (multimesh-only path fields pointing outside, nested multimesh, types
//     that are paths or name a canary plugin outside binDir/CNI_PATH, deep
//     and large JSON) and random pod annotations (odd selections, cni-args
//     of any shape, other namespaces, too many networks) through ADD, then
//     DEL. Whatever ADD answers: the canary never runs, nothing is created
//     outside the node's own dirs, and DEL succeeds leaving no interface, IP,
//     record or capture. `MM_FUZZ_SEED=N` replays another sequence;
//     `MM_BOUNDARY_CASES=N` runs more.
#[test]
fn random_tenant_input_never_crosses_the_boundary() {
    use common::rand::*;
    let node = Node::new("tb-prop");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    let outside = node.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let ran = node.dir.join("canary-ran");
    let canary = outside.join("canary");
    std::fs::write(
        &canary,
        format!("#!/bin/sh\necho ran >> {}\necho '{{}}'\n", ran.display()),
    )
    .unwrap();
    sh_ok(&format!("chmod 0755 {}", canary.display()));
    let out_path = |rng: &mut Rng| -> String {
        outside
            .join(format!("p{}", rng.below(1000)))
            .join(rng.pick(&["x", "x.log", "kubeconfig", "net.d"]))
            .display()
            .to_string()
    };
    let path_fields = [
        "binDir",
        "cniDir",
        "confDir",
        "logFile",
        "kubeconfig",
        "readinessindicatorfile",
    ];
    let types = [
        "multimesh".to_string(),
        "canary".to_string(),
        canary.display().to_string(),
        "../outside/canary".to_string(),
        "bridge".to_string(),
        "mm-recorder".to_string(),
    ];
    let mut conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let seed = std::env::var("MM_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7472_7573_7421u64);
    let cases: usize = std::env::var("MM_BOUNDARY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let mut rng = Rng::new(seed);
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        conf["namespaceIsolation"] = json!(rng.percent(50));
        // Four NADs in the pod's namespace, one in another.
        let mut names = Vec::new();
        for (i, ns) in ["apps", "apps", "apps", "apps", "other"].iter().enumerate() {
            let mut c = match rng.below(5) {
                0 => node.second_bridge(),
                1 => node.recorder(&format!("r{i}"), json!({})),
                // Delegates that fail ADD (and maybe DEL too): rollback.
                2 => {
                    let fail = if rng.percent(50) {
                        json!(["ADD", "DEL"])
                    } else {
                        json!("ADD")
                    };
                    node.recorder(&format!("f{i}"), json!({"failOn": fail}))
                }
                3 => {
                    let mut mv = node.macvlan();
                    mv["master"] = json!("mmnosuch0");
                    mv
                }
                _ => json!({"cniVersion": "1.0.0",
                            "plugins": [node.recorder(&format!("l{i}"), json!({}))]}),
            };
            let target = if c.get("plugins").is_some() {
                &mut c["plugins"][0]
            } else {
                &mut c
            };
            if rng.percent(30) {
                target["type"] = json!(rng.pick(&types));
            }
            if rng.percent(40) {
                for _ in 0..1 + rng.below(3) {
                    target[*rng.pick(&path_fields)] = json!(out_path(&mut rng));
                }
            }
            if rng.percent(20) {
                // A nested multimesh whose own delegate is the canary.
                c = json!({"cniVersion": "1.0.0", "type": "multimesh",
                    "binDir": outside.display().to_string(),
                    "cniDir": node.cni_dir().display().to_string(),
                    "logFile": out_path(&mut rng),
                    "delegates": [{"name": "x", "type": "canary"}, c]});
            }
            match rng.below(10) {
                0 => c["deep"] = nest(20 + rng.below(120), rng.percent(50)),
                1 => c["big"] = json!("x".repeat(rng.pick(&[1000usize, 300_000]).to_owned())),
                2 => c["odd"] = rand_value(&mut rng, 3),
                _ => {}
            }
            let name = format!("n{i}");
            api.put_nad(ns, &name, Some(&c.to_string()), json!({}));
            names.push(format!("{ns}/{name}"));
        }
        // The pod's request.
        let mut ann = serde_json::Map::new();
        let n = match rng.below(10) {
            0 => 40,
            _ => 1 + rng.below(4),
        };
        let sels: Vec<Value> = (0..n)
            .map(|k| {
                let full = rng.pick(&names).clone();
                let (ns, name) = full.split_once('/').unwrap();
                let mut s = json!({"name": name, "namespace": ns});
                if n > 4 || rng.percent(30) {
                    s["interface"] = json!(format!("x{k}"));
                }
                if rng.percent(25) {
                    s["cni-args"] = rand_value(&mut rng, 3);
                }
                if rng.percent(10) {
                    s["ips"] = json!([rand_string(&mut rng)]);
                }
                if rng.percent(5) {
                    s[rand_string(&mut rng)] = rand_value(&mut rng, 2);
                }
                s
            })
            .collect();
        let networks = if rng.percent(20) {
            sels.iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s["namespace"].as_str().unwrap(),
                        s["name"].as_str().unwrap()
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        } else {
            Value::Array(sels).to_string()
        };
        ann.insert("k8s.v1.cni.cncf.io/networks".into(), json!(networks));
        if rng.percent(15) {
            ann.insert(
                "v1.multus-cni.io/default-network".into(),
                json!(rng.pick(&names).clone()),
            );
        }
        let uid = format!("uid-{case}");
        put_pod(&api, "prop", &uid, Value::Object(ann.clone()));
        let id = ("apps", "prop", uid.as_str());
        let cid = format!("prop{case}");
        let add = cni_pod(&node, "ADD", &conf, &pod, &cid, id);
        assert!(
            add.code == 0 || add.json["code"].is_u64(),
            "seed {seed} case {case}: ADD answered no CNI JSON: {}\n{}",
            add.stdout,
            add.stderr
        );
        let outcome = if add.code == 0 {
            "ok".to_string()
        } else {
            format!("code {}", add.json["code"])
        };
        *outcomes.entry(outcome).or_default() += 1;
        let del = cni_pod(&node, "DEL", &conf, &pod, &cid, id);
        let ctx = format!(
            "seed {seed} case {case} (ADD: {})\nannotations: {}",
            add.stdout.trim(),
            Value::Object(ann)
                .to_string()
                .chars()
                .take(2000)
                .collect::<String>()
        );
        assert_eq!(del.code, 0, "{ctx}\nDEL: {}\n{}", del.stdout, del.stderr);
        assert!(!ran.exists(), "{ctx}: the canary ran");
        assert_eq!(
            walk(&outside),
            [canary.display().to_string()],
            "{ctx}: something was created outside"
        );
        assert!(pod.links().is_empty(), "{ctx}: {:?}", pod.links());
        pod.assert_no_capture(&ctx);
        let leaks = node.leaks();
        assert!(leaks.is_empty(), "{ctx}: leaked {leaks:#?}");
    }
    eprintln!("seed {seed}: {cases} cases, outcomes {outcomes:?}");
    assert!(
        outcomes.contains_key("ok"),
        "no case got through: {outcomes:?}"
    );
    assert!(outcomes.len() > 2, "too few kinds of answers: {outcomes:?}");
}

// 11. The pod, its network-selection elements and NADs are read as typed
//     documents: a refusal names where (entry, key), and comes before
//     anything runs — a pod whose annotations are not strings (109, the
//     API server's answer is not a pod), a selection key of the wrong
//     type or unknown (110), a NAD whose spec.config is not a string (7).
#[test]
fn typed_documents_name_what_they_refuse() {
    let node = Node::new("tb-typed");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    api.put_nad("apps", "sec", Some(&cfg(&node.second_bridge())), json!({}));
    let mut nad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "obj", "namespace": "apps"}, "spec": {"config": node.second_bridge()}});
    api.put_nad_json(&nad);
    nad["metadata"]["name"] = json!("ann");
    nad["metadata"]["annotations"] = json!({"multimesh.io/capture": false});
    nad["spec"]["config"] = json!(cfg(&node.second_bridge()));
    api.put_nad_json(&nad);
    let conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let id = ("apps", "w", "uid-w");
    let nets = |v: Value| json!({"k8s.v1.cni.cncf.io/networks": v.to_string()});
    for (ann, code, want) in [
        (
            json!({"traffic.sidecar.istio.io/excludeInboundPorts": 8080}),
            109,
            "metadata.annotations.traffic.sidecar.istio.io/excludeInboundPorts: invalid type: integer `8080`",
        ),
        (
            nets(json!([{"name": "sec"}, {"name": "sec", "portMappings": [{"containerPort": 80, "hostPort": null}]}])),
            110,
            "k8s.v1.cni.cncf.io/networks: [1].portMappings[0].hostPort: must be a port number",
        ),
        (
            nets(json!([{"name": "sec", "bandwidth": {"ingressRate": 1, "rate": 2}}])),
            110,
            "k8s.v1.cni.cncf.io/networks: [0].bandwidth.rate: unknown field `rate`",
        ),
        (
            nets(json!([{"name": "sec", "interface": ["net9"]}])),
            110,
            "k8s.v1.cni.cncf.io/networks: [0].interface: must be a string",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "obj"}),
            7,
            "NetworkAttachmentDefinition apps/obj: spec.config: must be a string",
        ),
        (
            json!({"k8s.v1.cni.cncf.io/networks": "ann"}),
            7,
            "NetworkAttachmentDefinition apps/ann: metadata.annotations.multimesh.io/capture: invalid type: boolean",
        ),
    ] {
        put_pod(&api, "w", "uid-w", ann.clone());
        let msg = refused_before_anything(&node, &conf, &pod, "cw", id, code);
        assert!(msg.contains(want), "{ann}: {msg:?} lacks {want:?}");
    }
}
