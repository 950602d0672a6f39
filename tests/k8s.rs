//! Kubernetes mode end to end: the real multimesh binary, run in a node
//! netns, talks HTTPS to the in-repo test API server (tests/apiserver/,
//! started inside the same node netns on its loopback), reads pods and
//! NetworkAttachmentDefinitions, attaches real bridges/macvlan/recorders,
//! programs capture as the pod's mesh annotations say, and writes
//! network-status back. Every failure case checks that nothing was left.

mod common;
use common::k8s::*;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

/// The pod's network-status annotation, parsed.
fn network_status(api: &ApiServer, ns: &str, name: &str) -> Vec<Value> {
    let p = api.pod(ns, name);
    let s = p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
        .as_str()
        .unwrap_or_else(|| panic!("no network-status on {ns}/{name}: {p}"));
    serde_json::from_str(s).expect("network-status is JSON")
}

fn iptables_nat(pod: &Pod) -> String {
    pod.exec_ok("iptables-legacy-save -t nat")
}

fn has_capture(pod: &Pod) -> bool {
    iptables_nat(pod).contains("MULTIMESH")
}

fn addr_of(pod: &Pod, ifname: &str) -> String {
    let a = pod.addrs(ifname);
    a.iter()
        .find(|x| !x.contains(':'))
        .unwrap_or_else(|| panic!("no v4 address on {ifname}: {a:?}"))
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn mac_of(pod: &Pod, ifname: &str) -> String {
    pod.exec_ok(&format!("cat /sys/class/net/{ifname}/address"))
        .trim()
        .to_string()
}

// 1. A meshed pod with two NADs (short form): interfaces, capture working
//    on a secondary interface, network-status, the round-trip budget, and
//    DEL with the API server gone.
#[test]
fn meshed_pod_with_two_networks() {
    let node = Node::new("k8s-mesh");
    let mut api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    api.put_nad("apps", "sec", Some(&cfg(&node.second_bridge())), json!({}));
    api.put_nad("apps", "mv", Some(&cfg(&node.macvlan())), json!({}));
    let ann = merged(
        istio_status(),
        json!({"k8s.v1.cni.cncf.io/networks": "sec, apps/mv@data0"}),
    );
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "web",
        "uid-1",
        ann,
        &["app", "istio-proxy"],
        &[],
    ));
    let conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    api.clear_requests();
    let id = ("apps", "web", "uid-1");
    let res = cni_pod(&node, "ADD", &conf, &pod, "c1", id);
    let res = res.ok().clone();
    let mut links = pod.links();
    links.sort();
    assert_eq!(links, ["data0", "eth0", "net1"]);
    // The result is the cluster network's.
    assert_eq!(
        res["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap(),
        addr_of(&pod, "eth0")
    );
    assert!(has_capture(&pod), "{}", iptables_nat(&pod));

    // One pod GET, one GET per distinct NAD, one status write.
    let mut reqs = requests(&api);
    reqs.sort();
    assert_eq!(
        reqs,
        [
            ("GET".into(), "/api/v1/namespaces/apps/pods/web".into()),
            (
                "GET".into(),
                "/apis/k8s.cni.cncf.io/v1/namespaces/apps/network-attachment-definitions/mv".into()
            ),
            (
                "GET".into(),
                "/apis/k8s.cni.cncf.io/v1/namespaces/apps/network-attachment-definitions/sec"
                    .into()
            ),
            (
                "PATCH".into(),
                "/api/v1/namespaces/apps/pods/web/status".into()
            ),
        ]
    );

    // Multus's network-status format.
    let st = network_status(&api, "apps", "web");
    assert_eq!(st.len(), 3, "{st:?}");
    assert_eq!(st[0]["name"], "cluster");
    assert_eq!(st[0]["interface"], "eth0");
    assert_eq!(st[0]["default"], true);
    assert_eq!(st[0]["ips"], json!([addr_of(&pod, "eth0")]));
    assert_eq!(st[0]["mac"], mac_of(&pod, "eth0"));
    assert_eq!(st[0]["gateway"], json!(["198.51.100.1"]));
    assert_eq!(st[1]["name"], "apps/sec");
    assert_eq!(st[1]["interface"], "net1");
    assert_eq!(st[1]["ips"], json!([addr_of(&pod, "net1")]));
    assert!(st[1].get("default").is_none());
    assert_eq!(st[2]["name"], "apps/mv");
    assert_eq!(st[2]["interface"], "data0");
    assert_eq!(st[2]["mac"], mac_of(&pod, "data0"));
    assert!(st.iter().all(|e| e["dns"].is_object()));

    // Capture works on the macvlan secondary interface.
    {
        let _proxy = Listener::start(&pod.name, 15006, false, 1);
        let _app = Listener::start(&pod.name, 8080, false, 1);
        let ip = addr_of(&pod, "data0");
        let a = connect(&node.name, &ip, 8080, false, None).expect("connect via data0");
        assert_eq!(field(&a, "served_by"), "15006", "{a}");
        assert_eq!(field(&a, "orig"), format!("{ip}:8080"), "{a}");
    }
    cni_pod(&node, "CHECK", &conf, &pod, "c1", id).ok();

    // DEL works from state alone: the API server is gone.
    api.stop();
    cni_pod(&node, "DEL", &conf, &pod, "c1", id).ok();
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    assert!(!has_capture(&pod));
    node.assert_no_leaks();
}

// 2. The JSON form: requested ips and mac, default-route, cni-args.
#[test]
fn json_selection_ips_mac_default_route_cni_args() {
    let node = Node::new("k8s-json");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    let mvs = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "mmv0", "mode": "bridge",
        "capabilities": {"ips": true, "mac": true}, "ipam": {"type": "static"}});
    api.put_nad("apps", "mvs", Some(&cfg(&mvs)), json!({}));
    let rec_caps = node.recorder(
        "rec",
        json!({"capabilities": {"portMappings": true, "bandwidth": true}}),
    );
    api.put_nad("apps", "rec", Some(&cfg(&rec_caps)), json!({}));
    let nets = json!([
        {"name": "mvs", "interface": "data1", "ips": ["203.0.113.77/25"],
         "mac": "02:00:00:aa:bb:cc", "default-route": ["203.0.113.126"]},
        {"name": "rec", "namespace": "apps", "cni-args": {"foo": "bar", "n": 1},
         "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
         "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}}
    ]);
    let ann = json!({"k8s.v1.cni.cncf.io/networks": nets.to_string()});
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "j",
        "uid-j",
        ann,
        &["app"],
        &[],
    ));
    let conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    let id = ("apps", "j", "uid-j");
    cni_pod(&node, "ADD", &conf, &pod, "cj", id).ok();
    assert_eq!(pod.addrs("data1"), ["203.0.113.77/25"]);
    assert_eq!(mac_of(&pod, "data1"), "02:00:00:aa:bb:cc");
    // The default route moved to data1.
    let routes = pod.exec_ok("ip -4 route show default");
    assert_eq!(
        routes.trim(),
        "default via 203.0.113.126 dev data1",
        "{routes}"
    );
    // cni-args reached the recorder as args.cni.
    let calls = node.calls();
    let add = calls
        .iter()
        .find(|c| c["command"] == "ADD")
        .expect("recorder ADD");
    assert_eq!(add["ifname"], "net2");
    assert_eq!(add["config"]["args"]["cni"], json!({"foo": "bar", "n": 1}));
    // portMappings and bandwidth reach it as runtimeConfig (declared capabilities).
    assert_eq!(
        add["config"]["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
               "bandwidth": {"ingressRate": 1000000, "ingressBurst": 100000}})
    );
    // Not meshed: no capture.
    assert!(!has_capture(&pod));
    let st = network_status(&api, "apps", "j");
    assert!(st[0].get("default").is_none(), "{st:?}");
    assert_eq!(st[1]["interface"], "data1");
    assert_eq!(st[1]["default"], true);
    assert_eq!(st[1]["ips"], json!(["203.0.113.77"]));
    cni_pod(&node, "DEL", &conf, &pod, "cj", id).ok();
    assert!(pod.links().is_empty());
    node.assert_no_leaks();

    // A gateway the kernel refuses (not on data1's subnet): 110 naming it,
    // everything rolled back.
    let nets = json!([{"name": "mvs", "interface": "data1", "ips": ["203.0.113.77/25"],
                       "default-route": ["198.51.100.250"]}]);
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "j",
        "uid-j",
        json!({"k8s.v1.cni.cncf.io/networks": nets.to_string()}),
        &["app"],
        &[],
    ));
    let msg = cni_pod(&node, "ADD", &conf, &pod, "cj2", id).err(110);
    assert!(
        msg.contains("default-route 198.51.100.250 via data1"),
        "{msg}"
    );
    assert!(pod.links().is_empty(), "{:?}", pod.links());
    node.assert_no_leaks();
    cni_pod(&node, "DEL", &conf, &pod, "cj2", id).ok();
}

// 3. default-network, defaultNetworks, a NAD with an empty config found in
//    confDir, system namespaces, namespace isolation.
#[test]
fn default_network_conf_dir_and_namespaces() {
    let node = Node::new("k8s-dflt");
    let api = ApiServer::start_in(&node.name);
    let conf_dir = node.dir.join("conf");
    std::fs::write(
        conf_dir.join("extra.conf"),
        node.recorder("extra", json!({"address": "203.0.113.20/24"}))
            .to_string(),
    )
    .unwrap();
    std::fs::write(
        conf_dir.join("fromdir.conf"),
        node.recorder("fromdir", json!({"address": "203.0.113.21/24"}))
            .to_string(),
    )
    .unwrap();
    // The replacement cluster network lives in multusNamespace (kube-system).
    let mut alt = node.second_bridge();
    alt["name"] = json!("alt");
    api.put_nad("kube-system", "alt", Some(&cfg(&alt)), json!({}));
    api.put_nad("apps", "fromdir", None, json!({}));
    // A conflist NAD.
    let sh =
        json!({"cniVersion": "1.0.0", "name": "sh", "plugins": [node.recorder("sh", json!({}))]});
    api.put_nad("shared", "sh", Some(&cfg(&sh)), json!({}));
    // A defaultNetworks entry that is not in confDir: a NAD in multusNamespace.
    api.put_nad(
        "kube-system",
        "dnnad",
        Some(&cfg(
            &node.recorder("dnnad", json!({"address": "203.0.113.22/24"}))
        )),
        json!({}),
    );
    api.put_nad(
        "other",
        "priv",
        Some(&cfg(&node.recorder("priv", json!({})))),
        json!({}),
    );
    let mut conf = k8s_conf(
        &node,
        &api.kubeconfig_token(),
        vec![node.cluster_bridge()],
        legacy(),
    );
    conf["defaultNetworks"] = json!(["extra", "dnnad"]);
    conf["namespaceIsolation"] = json!(true);
    conf["globalNamespaces"] = json!("shared");

    // default-network replaces eth0; defaultNetworks; confDir NAD; global ns.
    let ann = json!({"v1.multus-cni.io/default-network": "alt",
        "k8s.v1.cni.cncf.io/networks": "fromdir,shared/sh"});
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "d",
        "uid-d",
        ann,
        &["app"],
        &[],
    ));
    let pod = node.pod("d");
    let id = ("apps", "d", "uid-d");
    let res = cni_pod(&node, "ADD", &conf, &pod, "cd", id);
    let ip = res.ok()["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("198.51.100.1"),
        "eth0 should come from mm1: {ip}"
    );
    assert_eq!(pod.links(), ["eth0"]);
    let st = network_status(&api, "apps", "d");
    let names: Vec<(&str, &str)> = st
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
            ("kube-system/alt", "eth0"),
            ("extra", "net1"),
            ("kube-system/dnnad", "net2"),
            ("apps/fromdir", "net3"),
            ("shared/sh", "net4")
        ]
    );
    assert_eq!(st[2]["ips"], json!(["203.0.113.22"]));
    assert_eq!(st[3]["ips"], json!(["203.0.113.21"]));
    cni_pod(&node, "DEL", &conf, &pod, "cd", id).ok();

    // A kube-system pod: no defaultNetworks, and never captured.
    let ann = merged(istio_status(), json!({}));
    api.put_pod(&ApiServer::pod_json(
        "kube-system",
        "k",
        "uid-k",
        ann,
        &["app", "istio-proxy"],
        &[],
    ));
    let pod_k = node.pod("k");
    let idk = ("kube-system", "k", "uid-k");
    cni_pod(&node, "ADD", &conf, &pod_k, "ck", idk).ok();
    let st = network_status(&api, "kube-system", "k");
    assert_eq!(st.len(), 1, "{st:?}");
    assert!(!has_capture(&pod_k));
    cni_pod(&node, "DEL", &conf, &pod_k, "ck", idk).ok();

    // Namespace isolation: another namespace's NAD is refused, nothing runs.
    let before = node.calls().len();
    let ann = json!({"k8s.v1.cni.cncf.io/networks": "other/priv"});
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "iso",
        "uid-i",
        ann,
        &["app"],
        &[],
    ));
    let pod_i = node.pod("i");
    let e = cni_pod(&node, "ADD", &conf, &pod_i, "ci", ("apps", "iso", "uid-i")).err(110);
    assert!(e.contains("namespaceIsolation"), "{e}");
    assert_eq!(node.calls().len(), before, "a delegate ran");
    assert!(pod_i.links().is_empty());
    node.assert_no_leaks();
}

/// ADD a pod with `ann` on a recorder cluster network; return the nat
/// table of its netns (iptables-legacy), then DEL.
fn rules_for(
    node: &Node,
    api: &ApiServer,
    conf: &Value,
    tag: &str,
    ann: Value,
    containers: &[&str],
) -> String {
    let pod = node.pod(tag);
    let uid = format!("uid-{tag}");
    api.put_pod(&ApiServer::pod_json(
        "apps",
        tag,
        &uid,
        ann,
        containers,
        &[],
    ));
    let id = ("apps", tag, uid.as_str());
    cni_pod(node, "ADD", conf, &pod, tag, id).ok();
    let rules = iptables_nat(&pod);
    cni_pod(node, "DEL", conf, &pod, tag, id).ok();
    assert!(!has_capture(&pod), "{tag}: rules left after DEL");
    rules
}

// 4. Which pods are captured, and every mesh annotation changing the rules
//    as `multimesh rules --pod` says it will.
#[test]
fn mesh_annotations_shape_the_rules() {
    let node = Node::new("k8s-ann");
    let api = ApiServer::start_in(&node.name);
    let quiet = api.kubeconfig_token();
    let mut conf = k8s_conf(
        &node,
        &quiet,
        vec![node.recorder("cluster", json!({}))],
        legacy(),
    );
    conf["delegates"]
        .as_array_mut()
        .unwrap()
        .push(node.recorder("second", json!({"address": "203.0.113.30/24"})));
    let proxy = ["app", "istio-proxy"];

    // Not meshed: no status annotation / no proxy / injection off / init container.
    for (tag, ann, cs, inits) in [
        ("n1", json!({}), &proxy[..], &[][..]),
        ("n2", istio_status(), &["app"][..], &[][..]),
        (
            "n3",
            merged(istio_status(), json!({"sidecar.istio.io/inject": "false"})),
            &proxy[..],
            &[][..],
        ),
        ("n4", istio_status(), &proxy[..], &["istio-init"][..]),
    ] {
        let pod = node.pod(tag);
        let uid = format!("uid-{tag}");
        api.put_pod(&ApiServer::pod_json("apps", tag, &uid, ann, cs, inits));
        cni_pod(&node, "ADD", &conf, &pod, tag, ("apps", tag, &uid)).ok();
        assert!(
            !has_capture(&pod),
            "{tag} must not be captured:\n{}",
            iptables_nat(&pod)
        );
        cni_pod(&node, "DEL", &conf, &pod, tag, ("apps", tag, &uid)).ok();
    }

    // Each option, and the rule it must produce.
    let cases = [
        (
            "excludeInboundPorts",
            "8080,9000-9001",
            "-A MULTIMESH_INBOUND -p tcp -m tcp --dport 9001 -j RETURN",
        ),
        (
            "includeInboundPorts",
            "9090",
            "-A MULTIMESH_INBOUND -p tcp -m tcp --dport 9090 -j MULTIMESH_IN_REDIRECT",
        ),
        (
            "excludeOutboundPorts",
            "5432",
            "-A MULTIMESH_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
        ),
        (
            "includeOutboundPorts",
            "7070",
            "-A MULTIMESH_OUTPUT -p tcp -m tcp --dport 7070 -j MULTIMESH_REDIRECT",
        ),
        (
            "excludeOutboundIPRanges",
            "203.0.113.0/24",
            "-A MULTIMESH_OUTPUT -d 203.0.113.0/24 -j RETURN",
        ),
        (
            "includeOutboundIPRanges",
            "198.51.100.0/24",
            "-A MULTIMESH_OUTPUT -d 198.51.100.0/24 -j MULTIMESH_REDIRECT",
        ),
        (
            "excludeInterfaces",
            "net1",
            "-A MULTIMESH_INBOUND -i net1 -j RETURN",
        ),
    ];
    let base_rules = rules_for(&node, &api, &conf, "base", istio_status(), &proxy);
    assert!(
        base_rules.contains("-A MULTIMESH_INBOUND -p tcp -j MULTIMESH_IN_REDIRECT"),
        "{base_rules}"
    );
    for (i, (k, v, want)) in cases.iter().enumerate() {
        let key = format!("traffic.sidecar.istio.io/{k}");
        let ann = merged(istio_status(), json!({ key.clone(): v }));
        let tag = format!("o{i}");
        let got = rules_for(&node, &api, &conf, &tag, ann.clone(), &proxy);
        assert!(got.contains(want), "{key}={v}: expected {want:?} in\n{got}");
        assert!(
            !base_rules.contains(want),
            "{want:?} is in the base rules too"
        );
        // The dry run predicts exactly the programmed rules.
        let pod_file = node.dir.join(format!("{tag}.json"));
        std::fs::write(
            &pod_file,
            ApiServer::pod_json("apps", &tag, "u", ann, &proxy, &[]).to_string(),
        )
        .unwrap();
        let conf_file = node.dir.join("conf.json");
        std::fs::write(&conf_file, conf.to_string()).unwrap();
        let dry = sh_ok(&format!(
            "{BIN} rules --config {} --pod {}",
            conf_file.display(),
            pod_file.display()
        ));
        for l in dry.lines().filter(|l| l.starts_with("-A")) {
            assert!(
                got.contains(l),
                "{key}: dry-run rule {l:?} not programmed:\n{got}"
            );
        }
    }
    // includeInboundPorts replaces the catch-all.
    let only = rules_for(
        &node,
        &api,
        &conf,
        "only",
        merged(
            istio_status(),
            json!({"traffic.sidecar.istio.io/includeInboundPorts": "9090"}),
        ),
        &proxy,
    );
    assert!(
        !only.contains("-A MULTIMESH_INBOUND -p tcp -j MULTIMESH_IN_REDIRECT"),
        "{only}"
    );

    // A NAD annotated multimesh.io/capture=false keeps its interface out.
    api.put_nad(
        "apps",
        "nocap",
        Some(&cfg(
            &node.recorder("nocap", json!({"address": "203.0.113.31/24"}))
        )),
        json!({"multimesh.io/capture": "false"}),
    );
    let got = rules_for(
        &node,
        &api,
        &conf,
        "nad",
        merged(
            istio_status(),
            json!({"k8s.v1.cni.cncf.io/networks": "nocap@ext0"}),
        ),
        &proxy,
    );
    assert!(
        got.contains("-A MULTIMESH_INBOUND -i ext0 -j RETURN"),
        "{got}"
    );
    assert!(
        got.contains("-A MULTIMESH_OUTPUT -o ext0 -j RETURN"),
        "{got}"
    );
    assert!(!got.contains("-i net1 -j RETURN"), "{got}");

    // The linkerd profile honours its own annotations.
    let mut lconf = conf.clone();
    lconf["capture"]["profile"] = json!("linkerd");
    let got = rules_for(
        &node,
        &api,
        &lconf,
        "l5d",
        json!({
        "config.linkerd.io/proxy-uid": "2103",
        "config.linkerd.io/skip-inbound-ports": "25",
        "config.linkerd.io/skip-outbound-ports": "3306-3307",
        "config.linkerd.io/skip-subnets": "203.0.113.0/25"}),
        &["app", "linkerd-proxy"],
    );
    assert!(
        got.contains("-A MULTIMESH_OUTPUT -p tcp -m tcp --dport 3307 -j RETURN"),
        "{got}"
    );
    assert!(got.contains("--uid-owner 2103 -j RETURN"), "{got}");
    assert!(got.contains("--dport 25 -j RETURN"), "{got}");
    assert!(got.contains("-d 203.0.113.0/25 -j RETURN"), "{got}");
    assert!(got.contains("--to-ports 4143"), "{got}");
    // An istio-annotated pod is not a linkerd pod.
    let got = rules_for(&node, &api, &lconf, "l5d-no", istio_status(), &proxy);
    assert!(!got.contains("MULTIMESH"), "{got}");
    node.assert_no_leaks();
}

/// ADD must fail with `code`, run no delegate and leave nothing.
fn refused(node: &Node, conf: &Value, tag: &str, id: (&str, &str, &str), code: u64) -> String {
    let before = node.calls().len();
    let pod = node.pod(tag);
    let e = cni_pod(node, "ADD", conf, &pod, tag, id).err(code);
    assert_eq!(node.calls().len(), before, "{tag}: a delegate ran");
    assert!(pod.links().is_empty(), "{tag}");
    assert!(!has_capture(&pod), "{tag}");
    node.assert_no_leaks();
    e
}

// 5. Every way the pod, the API server or an annotation can be wrong.
#[test]
fn bad_pods_and_api_failures_leave_nothing() {
    let node = Node::new("k8s-bad");
    let mut api = ApiServer::start_in(&node.name);
    let rec = vec![node.recorder("cluster", json!({}))];
    let conf = k8s_conf(&node, &api.kubeconfig_token(), rec.clone(), legacy());
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "ok",
        "uid-ok",
        istio_status(),
        &["app", "istio-proxy"],
        &[],
    ));

    let e = refused(&node, &conf, "miss", ("apps", "missing", "u"), 108);
    assert!(e.contains("not found"), "{e}");
    let e = refused(&node, &conf, "uid", ("apps", "ok", "other-uid"), 108);
    assert!(e.contains("UID"), "{e}");

    // Injection attempts and malformed annotations.
    for (i, (k, v)) in [
        ("k8s.v1.cni.cncf.io/networks", "80 -j ACCEPT"),
        (
            "k8s.v1.cni.cncf.io/networks",
            "[{\"name\": \"x\", \"interface\": \"eth1 -j ACCEPT\"}]",
        ),
        ("k8s.v1.cni.cncf.io/networks", "[{\"name\": \"x\""),
        ("k8s.v1.cni.cncf.io/networks", "nope"),
        ("v1.multus-cni.io/default-network", "a,b"),
        (
            "traffic.sidecar.istio.io/excludeInboundPorts",
            "80 -j ACCEPT",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "0.0.0.0/0 -j ACCEPT",
        ),
        (
            "traffic.sidecar.istio.io/excludeInterfaces",
            "eth0 -j ACCEPT",
        ),
        ("traffic.sidecar.istio.io/includeInboundPorts", "*,80"),
    ]
    .iter()
    .enumerate()
    {
        let name = format!("bad{i}");
        let ann = merged(istio_status(), json!({ *k: v }));
        api.put_pod(&ApiServer::pod_json(
            "apps",
            &name,
            "u",
            ann,
            &["app", "istio-proxy"],
            &[],
        ));
        let e = refused(&node, &conf, &name, ("apps", &name, "u"), 110);
        assert!(e.contains(k), "{k}={v}: {e}");
    }

    // The API server drops connections mid-request: retried, then code 11.
    api.set_faults(json!({"down": true}));
    let e = refused(&node, &conf, "drop", ("apps", "ok", "uid-ok"), 11);
    assert!(e.contains("unreachable"), "{e}");
    let gets = api
        .requests()
        .iter()
        .filter(|r| r["method"] == "GET")
        .count();
    assert!(gets >= 3, "GET retried: {:?}", api.requests());
    api.set_faults(json!({}));

    // A token the API server does not accept.
    let bad_tok = api.kubeconfig_with(&api.url, "token: not-a-valid-token");
    let e = refused(
        &node,
        &k8s_conf(&node, &bad_tok, rec.clone(), legacy()),
        "tok",
        ("apps", "ok", "uid-ok"),
        109,
    );
    assert!(e.contains("401"), "{e}");

    // Unreachable API server: code 11, quickly.
    let gone = node.dir.join("gone.kubeconfig");
    std::fs::copy(api.kubeconfig_token(), &gone).unwrap();
    api.stop();
    let t = std::time::Instant::now();
    let e = refused(
        &node,
        &k8s_conf(&node, &gone, rec, legacy()),
        "down",
        ("apps", "ok", "uid-ok"),
        11,
    );
    assert!(e.contains("unreachable"), "{e}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
}

// 6. Credentials and the status write: client certificates, a token file
//    re-read on every call, conflicts retried, a failed write not fatal.
#[test]
fn credentials_and_status_write() {
    let node = Node::new("k8s-cred");
    let api = ApiServer::start_in(&node.name);
    let rec = || vec![node.recorder("cluster", json!({}))];
    let mut n = 0;
    let mut run = |kubeconfig: &Path| -> CniOut {
        n += 1;
        let name = format!("c{n}");
        let uid = format!("uid-{n}");
        api.put_pod(&ApiServer::pod_json(
            "apps",
            &name,
            &uid,
            json!({}),
            &["app"],
            &[],
        ));
        let pod = node.pod(&name);
        let conf = k8s_conf(&node, kubeconfig, rec(), legacy());
        let out = cni_pod(&node, "ADD", &conf, &pod, &name, ("apps", &name, &uid));
        if out.code == 0 {
            assert_eq!(network_status(&api, "apps", &name).len(), 1);
            cni_pod(&node, "DEL", &conf, &pod, &name, ("apps", &name, &uid)).ok();
        }
        out
    };

    // Client certificate.
    api.clear_requests();
    run(&api.kubeconfig_cert()).ok();
    assert!(
        api.requests().iter().all(|r| r["auth"] == "cert"),
        "{:?}",
        api.requests()
    );

    // tokenFile: rotated between calls, read afresh each time.
    let kc = api.kubeconfig_token_file();
    api.set_token_file("rotated-1");
    api.set_tokens(&["rotated-1"]);
    run(&kc).ok();
    api.set_tokens(&["rotated-2"]);
    run(&kc).err(109);
    api.set_token_file("rotated-2");
    run(&kc).ok();
    api.set_tokens(&[&api.token.clone()]);

    // Conflicts on the status write are retried.
    api.set_faults(json!({"status_conflicts": 2}));
    api.clear_requests();
    run(&api.kubeconfig_token()).ok();
    let patches = api
        .requests()
        .iter()
        .filter(|r| r["method"] == "PATCH")
        .count();
    assert_eq!(patches, 3, "{:?}", api.requests());

    // A status write that keeps failing does not fail the ADD (as Multus).
    api.set_faults(json!({"fail": [{"method": "PATCH", "path_prefix": "/api/v1/", "status": 500, "count": 10}]}));
    let pod = node.pod("sf");
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "sf",
        "uid-sf",
        json!({}),
        &["app"],
        &[],
    ));
    let conf = k8s_conf(&node, &api.kubeconfig_token(), rec(), legacy());
    let out = cni_pod(&node, "ADD", &conf, &pod, "sf", ("apps", "sf", "uid-sf"));
    out.ok();
    assert!(
        out.stderr.contains("network-status not written"),
        "{}",
        out.stderr
    );
    cni_pod(&node, "DEL", &conf, &pod, "sf", ("apps", "sf", "uid-sf")).ok();
    api.set_faults(json!({}));

    // Transient GET failures are retried.
    api.set_faults(
        json!({"fail": [{"method": "GET", "path_prefix": "/api/v1/", "status": 503, "count": 2}]}),
    );
    run(&api.kubeconfig_token()).ok();
    node.assert_no_leaks();
}

// 7. Chained after another plugin (or referenced from a NAD under an
//    existing Multus): the pod's annotations decide capture.
#[test]
fn chained_capture_decided_by_the_pod() {
    let node = Node::new("k8s-chain");
    let api = ApiServer::start_in(&node.name);
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "198.51.100.50/25", "interface": 0}], "dns": {}});
    let conf = json!({"cniVersion": "1.0.0", "name": "chained", "type": "multimesh",
        "kubeconfig": api.kubeconfig_token().display().to_string(),
        "cniDir": node.cni_dir().display().to_string(), "capture": legacy(), "prevResult": prev});
    for (tag, ann, meshed) in [("m", istio_status(), true), ("u", json!({}), false)] {
        let uid = format!("uid-{tag}");
        api.put_pod(&ApiServer::pod_json(
            "apps",
            tag,
            &uid,
            ann,
            &["app", "istio-proxy"],
            &[],
        ));
        let pod = node.pod(tag);
        let out = cni_pod(&node, "ADD", &conf, &pod, tag, ("apps", tag, &uid));
        assert_eq!(out.ok()["ips"], prev["ips"], "prevResult passed through");
        assert_eq!(has_capture(&pod), meshed, "{tag}");
        cni_pod(&node, "DEL", &conf, &pod, tag, ("apps", tag, &uid)).ok();
        assert!(!has_capture(&pod));
    }
    // Chained mode never writes network-status (the main plugin's job).
    assert!(api.requests().iter().all(|r| r["method"] == "GET"));
    node.assert_no_leaks();
}

// 8. In-cluster configuration: no kubeconfig; KUBERNETES_SERVICE_HOST/PORT
//    and the service-account token and CA under
//    /var/run/secrets/kubernetes.io/serviceaccount. The test provides those
//    in a private mount namespace (a tmpfs over /run), so the host is not
//    touched.
#[test]
fn in_cluster_configuration() {
    let node = Node::new("k8s-incl");
    let api = ApiServer::start_in(&node.name);
    let pod = node.pod("p");
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "ic",
        "uid-ic",
        istio_status(),
        &["app", "istio-proxy"],
        &[],
    ));
    let d = node.dir.clone();
    std::fs::create_dir_all(d.join("sa")).unwrap();
    std::fs::write(d.join("sa/token"), format!("{}\n", api.token)).unwrap();
    std::fs::copy(api.ca_pem(), d.join("sa/ca.crt")).unwrap();
    let conf = node.meta(vec![node.recorder("cluster", json!({}))], legacy());
    std::fs::write(d.join("conf.json"), conf.to_string()).unwrap();
    let script = format!(
        "set -e; touch {d}/podns; mount --bind {path} {d}/podns; \
         mount -t tmpfs tmpfs /run; \
         mkdir -p /run/secrets/kubernetes.io/serviceaccount; \
         cp {d}/sa/token {d}/sa/ca.crt /run/secrets/kubernetes.io/serviceaccount/; \
         exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND=ADD CNI_CONTAINERID=cic \
           CNI_NETNS={d}/podns CNI_IFNAME=eth0 CNI_PATH={REF_PLUGINS} \
           'CNI_ARGS={args}' KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT={port} \
           {BIN} < {d}/conf.json",
        d = d.display(),
        path = pod.path,
        args = pod_args("apps", "ic", "uid-ic", "cic"),
        port = api.port,
    );
    let out = sh(&format!(
        "ip netns exec {} unshare -m --propagation private bash -c {}",
        node.name,
        shell_quote(&script)
    ));
    assert!(
        out.status.success(),
        "in-cluster ADD failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It reached the API server with the service-account token: the pod
    // was read (meshed → captured) and network-status written.
    assert!(has_capture(&pod));
    assert_eq!(network_status(&api, "apps", "ic").len(), 1);
    assert!(api.requests().iter().all(|r| r["auth"] == "token"));
    let id = ("apps", "ic", "uid-ic");
    cni_pod(&node, "DEL", &conf, &pod, "cic", id).ok();
    assert!(!has_capture(&pod));
    node.assert_no_leaks();
}

// 9. Transport policy (contract §6): insecure-skip-tls-verify together with
//    a CA is refused before anything runs; without a CA it works and is
//    warned about; a plain http:// server is refused unless the network
//    config says `allowInsecureHTTP: true`. No token in any log.
#[test]
fn insecure_tls_and_plain_http_policy() {
    let node = Node::new("k8s-tls");
    let api = ApiServer::start_in(&node.name);
    let rec = || vec![node.recorder("cluster", json!({}))];
    let ca_b64 = common::k8s::base64(&std::fs::read(api.ca_pem()).unwrap());
    let user = format!("token: {}", api.token);
    api.put_pod(&ApiServer::pod_json(
        "apps",
        "w",
        "uid-w",
        json!({}),
        &["app"],
        &[],
    ));
    let id = ("apps", "w", "uid-w");

    // (a) A CA and insecure-skip-tls-verify: code 7, the API server never
    //     contacted, no delegate run, nothing left.
    api.clear_requests();
    for (i, (field, value)) in [
        ("certificate-authority-data", ca_b64.clone()),
        ("certificate-authority", api.ca_pem().display().to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        let kc = api.kubeconfig_custom(
            &format!(
                "{field}: {value}\ninsecure-skip-tls-verify: true\nserver: {}",
                api.url
            ),
            &user,
        );
        let conf = k8s_conf(&node, &kc, rec(), legacy());
        let e = refused(&node, &conf, &format!("ca{i}"), id, 7);
        assert!(
            e.contains("insecure-skip-tls-verify") && e.contains(field),
            "{e}"
        );
    }
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    // (b) insecure-skip-tls-verify without a CA: accepted, with a warning.
    let kc = api.kubeconfig_custom(
        &format!("insecure-skip-tls-verify: true\nserver: {}", api.url),
        &user,
    );
    let conf = k8s_conf(&node, &kc, rec(), legacy());
    let pod = node.pod("ins");
    let out = cni_pod(&node, "ADD", &conf, &pod, "ins", id);
    out.ok();
    assert!(
        out.stderr.contains("warning") && out.stderr.contains("insecure-skip-tls-verify"),
        "no warning: {}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&api.token),
        "token logged: {}",
        out.stderr
    );
    assert_eq!(network_status(&api, "apps", "w").len(), 1);
    cni_pod(&node, "DEL", &conf, &pod, "ins", id).ok();
    node.assert_no_leaks();

    // (c) A plain http:// API server.
    let plain = ApiServer::start_plain_in(&node.name);
    assert!(plain.url.starts_with("http://"), "{}", plain.url);
    plain.put_pod(&ApiServer::pod_json(
        "apps",
        "w",
        "uid-w",
        json!({}),
        &["app"],
        &[],
    ));
    let kc = plain.kubeconfig_custom(
        &format!("server: {}", plain.url),
        &format!("token: {}", plain.token),
    );
    let mut conf = k8s_conf(&node, &kc, rec(), legacy());
    for (i, allow) in [None, Some(json!(false)), Some(json!("true"))]
        .into_iter()
        .enumerate()
    {
        if let Some(a) = &allow {
            conf["allowInsecureHTTP"] = a.clone();
        }
        let e = refused(&node, &conf, &format!("http{i}"), id, 7);
        assert!(e.contains("allowInsecureHTTP"), "{allow:?}: {e}");
    }
    assert!(plain.requests().is_empty(), "{:?}", plain.requests());
    conf["allowInsecureHTTP"] = json!(true);
    let pod = node.pod("http");
    let out = cni_pod(&node, "ADD", &conf, &pod, "http", id);
    out.ok();
    assert!(
        !out.stderr.contains(&plain.token),
        "token logged: {}",
        out.stderr
    );
    assert_eq!(network_status(&plain, "apps", "w").len(), 1);
    let reqs = plain.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r["auth"] == "token"),
        "{reqs:?}"
    );
    cni_pod(&node, "DEL", &conf, &pod, "http", id).ok();
    node.assert_no_leaks();
}

/// A pod whose proxy is a native sidecar (an init container with
/// restartPolicy Always) carrying `proxy` (env, securityContext, ...),
/// after the plain init containers `inits`.
fn native_sidecar_pod(tag: &str, ann: Value, proxy: Value, inits: &[&str]) -> Value {
    let mut p = ApiServer::pod_json("apps", tag, &format!("uid-{tag}"), ann, &["app"], inits);
    let mut proxy = proxy;
    proxy["restartPolicy"] = json!("Always");
    proxy["image"] = json!("docker.io/istio/proxyv2:1.27.0");
    let list = p["spec"]["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    p["spec"]["initContainers"] = Value::Array([list, vec![proxy]].concat());
    p
}

/// Every table multimesh may use in the pod (iptables-legacy, IPv4) and
/// its policy-routing rules.
fn all_tables(pod: &Pod) -> String {
    pod.exec_ok("iptables-legacy-save; ip rule")
}

// 11. Native sidecars, the istio modes from the pod (interceptionMode
//     TPROXY, DNS capture from the proxy's env, rerouted interfaces), the
//     proxy's ids from its securityContext; linkerd's config from the
//     namespace, read with one GET only when the pod sets none.
#[test]
fn native_sidecars_modes_and_namespace_config() {
    let node = Node::new("k8s-native");
    let api = ApiServer::start_in(&node.name);
    let kc = api.kubeconfig_token();
    let conf = k8s_conf(
        &node,
        &kc,
        vec![node.recorder("cluster", json!({}))],
        legacy(),
    );

    // An istio native sidecar: captured with the pod's modes.
    let proxy = json!({"name": "istio-proxy",
        "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "securityContext": {"runAsUser": 1500, "runAsGroup": 1501, "runAsNonRoot": true}});
    let ann = merged(
        istio_status(),
        json!({"sidecar.istio.io/interceptionMode": "TPROXY",
               "istio.io/reroute-virtual-interfaces": "net1"}),
    );
    api.put_pod(&native_sidecar_pod("nat1", ann, proxy.clone(), &[]));
    let pod = node.pod("nat1");
    api.clear_requests();
    cni_pod(
        &node,
        "ADD",
        &conf,
        &pod,
        "nat1",
        ("apps", "nat1", "uid-nat1"),
    )
    .ok();
    let t = all_tables(&pod);
    for want in [
        "-A MULTIMESH_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --on-port 15006",
        "-A MULTIMESH_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MULTIMESH_DNS_ZONE_OUT -p udp -m owner --uid-owner 1500 -m udp --dport 53 -j CT --zone 1",
        "-A MULTIMESH_OUTPUT -m owner --gid-owner 1501 -j RETURN",
        "-A MULTIMESH_INBOUND -i net1 -j MULTIMESH_REDIRECT",
        "fwmark 0x539 lookup 133",
    ] {
        assert!(t.contains(want), "{want:?} missing:\n{t}");
    }
    assert!(
        !t.contains("--uid-owner 1337"),
        "the default uid is not the proxy's:\n{t}"
    );
    // The istio profile reads no namespace.
    let mut reqs = requests(&api);
    reqs.sort();
    assert_eq!(
        reqs,
        [
            ("GET".into(), "/api/v1/namespaces/apps/pods/nat1".into()),
            (
                "PATCH".into(),
                "/api/v1/namespaces/apps/pods/nat1/status".into()
            ),
        ]
    );
    cni_pod(
        &node,
        "CHECK",
        &conf,
        &pod,
        "nat1",
        ("apps", "nat1", "uid-nat1"),
    )
    .ok();
    cni_pod(
        &node,
        "DEL",
        &conf,
        &pod,
        "nat1",
        ("apps", "nat1", "uid-nat1"),
    )
    .ok();
    pod.assert_no_capture("after DEL");

    // istio-init beside the native sidecar: the init container captures.
    api.put_pod(&native_sidecar_pod(
        "nat2",
        istio_status(),
        proxy.clone(),
        &["istio-init"],
    ));
    let pod = node.pod("nat2");
    cni_pod(
        &node,
        "ADD",
        &conf,
        &pod,
        "nat2",
        ("apps", "nat2", "uid-nat2"),
    )
    .ok();
    assert!(!has_capture(&pod), "{}", all_tables(&pod));
    cni_pod(
        &node,
        "DEL",
        &conf,
        &pod,
        "nat2",
        ("apps", "nat2", "uid-nat2"),
    )
    .ok();

    // multimesh.io/dns-capture turns the env's DNS capture off; a bad
    // value is refused and leaves nothing.
    let ann = merged(istio_status(), json!({"multimesh.io/dns-capture": "false"}));
    api.put_pod(&native_sidecar_pod("nat3", ann, proxy.clone(), &[]));
    let pod = node.pod("nat3");
    cni_pod(
        &node,
        "ADD",
        &conf,
        &pod,
        "nat3",
        ("apps", "nat3", "uid-nat3"),
    )
    .ok();
    let t = all_tables(&pod);
    assert!(has_capture(&pod) && !t.contains("MULTIMESH_DNS"), "{t}");
    cni_pod(
        &node,
        "DEL",
        &conf,
        &pod,
        "nat3",
        ("apps", "nat3", "uid-nat3"),
    )
    .ok();
    let ann = merged(
        istio_status(),
        json!({"multimesh.io/dns-capture": "1; drop"}),
    );
    api.put_pod(&native_sidecar_pod("nat4", ann, proxy, &[]));
    let pod = node.pod("nat4");
    let msg = cni_pod(
        &node,
        "ADD",
        &conf,
        &pod,
        "nat4",
        ("apps", "nat4", "uid-nat4"),
    )
    .err(110);
    assert!(msg.contains("multimesh.io/dns-capture"), "{msg}");
    pod.assert_no_capture("after the refused ADD");

    // linkerd: the namespace's config.linkerd.io/* for a pod with none.
    let lconf = k8s_conf(
        &node,
        &kc,
        vec![node.recorder("cluster", json!({}))],
        merged(legacy(), json!({"profile": "linkerd"})),
    );
    api.put_namespace(
        "apps",
        json!({"config.linkerd.io/skip-outbound-ports": "5432",
               "config.linkerd.io/proxy-uid": "2200"}),
    );
    let lproxy = json!({"name": "linkerd-proxy", "securityContext": {"runAsUser": 2150}});
    for (tag, ann, ns_read, rule, uid) in [
        (
            "l1",
            json!({}),
            true,
            Some("--dport 5432 -j RETURN"),
            "2200",
        ),
        (
            "l2",
            json!({"config.linkerd.io/skip-inbound-ports": "9000"}),
            false,
            None,
            "2150",
        ),
    ] {
        let mut p = native_sidecar_pod(tag, ann, lproxy.clone(), &[]);
        p["spec"]["initContainers"][0]["image"] = json!("cr.l5d.io/linkerd/proxy:stable-2.14.10");
        api.put_pod(&p);
        let pod = node.pod(tag);
        let uidv = format!("uid-{tag}");
        api.clear_requests();
        cni_pod(&node, "ADD", &lconf, &pod, tag, ("apps", tag, &uidv)).ok();
        let t = all_tables(&pod);
        assert!(
            t.contains(&format!(
                "-A MULTIMESH_OUTPUT -m owner --uid-owner {uid} -j RETURN"
            )),
            "{tag}:\n{t}"
        );
        if let Some(r) = rule {
            assert!(t.contains(r), "{tag}: {r:?} missing:\n{t}");
        }
        assert!(!t.contains("5432") || rule.is_some(), "{tag}:\n{t}");
        let gets: Vec<_> = requests(&api)
            .into_iter()
            .filter(|(m, p)| m == "GET" && p == "/api/v1/namespaces/apps")
            .collect();
        assert_eq!(
            gets.len(),
            usize::from(ns_read),
            "{tag}: {:?}",
            requests(&api)
        );
        cni_pod(&node, "DEL", &lconf, &pod, tag, ("apps", tag, &uidv)).ok();
        pod.assert_no_capture(tag);
    }
    node.assert_no_leaks();
}
